/*
 * pgtest.c - throwaway Postgres databases for tests (see pgtest.h).
 *
 * How: connects to the server named by DATABASE_URL, issues CREATE DATABASE
 * for a name unique across processes (pid), calls (counter) and hosts (random
 * suffix), and hands back a conninfo string that is DATABASE_URL with only the
 * database name replaced, so host, port, user and options carry over whether
 * DATABASE_URL was a URI or a conninfo string.
 *
 * Threads: any; the counter is atomic and every call uses its own connection.
 */
#include "pgtest.h"

#include "ev/error.h"
#include "ev/migrate.h"
#include "ev/util.h"

#include <CUnit/CUnit.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Atomic unsigned counter;

static const char *admin_url(void)
{
    const char *url = getenv("DATABASE_URL");
    if (!url || !*url) {
        fprintf(stderr, "pgtest: DATABASE_URL is not set. This test needs Postgres: run it "
                        "through scripts/test.sh, or start a throwaway cluster with\n"
                        "  eval \"$(scripts/pg-harness.sh start $(mktemp -d))\"\n");
        return NULL;
    }
    return url;
}

int ev_pgtest_connect(ev_db_t **out, const char *url)
{
    char err[512];
    int rc = ev_db_connect(out, url, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "pgtest: %s\n", err);
    return rc;
}

/* Appends key='value' to buf with conninfo quoting. */
static char *append_kv(char *buf, const char *key, const char *val)
{
    size_t n = strlen(val);
    char *q = ev_malloc(2 * n + 1), *o = q;
    for (size_t i = 0; i < n; i++) {
        if (val[i] == '\'' || val[i] == '\\')
            *o++ = '\\';
        *o++ = val[i];
    }
    *o = '\0';
    char *out = ev_asprintf("%s%s%s='%s'", buf ? buf : "", buf && *buf ? " " : "", key, q);
    free(q);
    free(buf);
    return out;
}

/* DATABASE_URL with dbname replaced; NULL if it cannot be parsed. */
static char *url_with_dbname(const char *base, const char *dbname)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(base, &perr);
    if (!opts) {
        fprintf(stderr, "pgtest: cannot parse DATABASE_URL: %s\n", perr ? perr : "out of memory");
        PQfreemem(perr);
        return NULL;
    }
    char *out = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && strcmp(o->keyword, "dbname") != 0)
            out = append_kv(out, o->keyword, o->val);
    out = append_kv(out, "dbname", dbname);
    PQconninfoFree(opts);
    return out;
}

/* The dbname of a conninfo/URI, malloc'd, or NULL. */
static char *dbname_of(const char *url)
{
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    char *name = NULL;
    if (!opts)
        return NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val)
            name = ev_strdup(o->val);
    PQconninfoFree(opts);
    return name;
}

/* Runs "<verb> <ident><suffix>" on the admin connection. */
static int admin_ddl(const char *verb, const char *name, const char *suffix)
{
    const char *base = admin_url();
    if (!base)
        return EV_ECONFIG;
    ev_db_t *db = NULL;
    int rc = ev_pgtest_connect(&db, base);
    if (rc < 0)
        return rc;
    char *ident = PQescapeIdentifier(ev_db_conn(db), name, strlen(name));
    if (!ident) {
        rc = EV_EDB;
        goto out;
    }
    /* Database DDL takes no parameters; the name is quoted as an identifier. */
    char *sql = ev_asprintf("%s %s%s", verb, ident, suffix);
    rc = ev_db_exec(db, NULL, sql, 0, NULL);
    if (rc < 0)
        fprintf(stderr, "pgtest: %s failed: %s\n", sql, ev_db_error(db));
    free(sql);
    PQfreemem(ident);
out:
    ev_db_free(db);
    return rc;
}

static int create(char **url_out, bool migrate)
{
    int rc = 0;
    char *url = NULL;
    ev_db_t *db = NULL;
    *url_out = NULL;
    const char *base = admin_url();
    if (!base)
        return EV_ECONFIG;

    char name[64];
    snprintf(name, sizeof(name), "evtest_%ld_%u_%04x", (long)getpid(),
             atomic_fetch_add(&counter, 1), (unsigned)ev_rand_range(0, 0xffff));
    url = url_with_dbname(base, name);
    if (!url)
        return EV_ECONFIG;
    rc = admin_ddl("CREATE DATABASE", name, "");
    if (rc < 0)
        goto out;
    if (migrate) {
        char err[512];
        int applied = 0;
        rc = ev_pgtest_connect(&db, url);
        if (rc < 0)
            goto out;
        rc = ev_migrate_run(db, &applied, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "pgtest: migrating %s failed: %s\n", name, err);
            goto out;
        }
    }
    *url_out = url;
    url = NULL;
out:
    ev_db_free(db);
    if (url) /* created but unusable: do not leave it behind */
        ev_pgtest_drop_db(url);
    return rc;
}

int ev_pgtest_create_db(char **url_out)
{
    return create(url_out, true);
}

int ev_pgtest_create_empty_db(char **url_out)
{
    return create(url_out, false);
}

void ev_pgtest_drop_db(char *url)
{
    if (!url)
        return;
    char *name = dbname_of(url);
    if (name && strncmp(name, "evtest_", 7) == 0)
        (void)admin_ddl("DROP DATABASE IF EXISTS", name, " WITH (FORCE)");
    else
        fprintf(stderr, "pgtest: refusing to drop database '%s' (not made by pgtest)\n",
                name ? name : "?");
    free(name);
    free(url);
}

int ev_pgtest_exec(const char *url, const char *sql)
{
    ev_db_t *db = NULL;
    int rc = ev_pgtest_connect(&db, url);
    if (rc < 0)
        return rc;
    rc = ev_db_exec_script(db, sql);
    if (rc < 0)
        fprintf(stderr, "pgtest: SQL failed: %s\n  in: %.300s\n", ev_db_error(db), sql);
    ev_db_free(db);
    return rc;
}

int ev_pgtest_db_i64(ev_db_t *db, const char *sql, int64_t *out)
{
    PGresult *res = NULL;
    *out = 0;
    int rc = ev_db_exec(db, &res, sql, 0, NULL);
    if (rc < 0) {
        fprintf(stderr, "pgtest: SQL failed: %s\n  in: %.300s\n", ev_db_error(db), sql);
        return rc;
    }
    if (PQntuples(res) < 1 || PQnfields(res) < 1) {
        rc = EV_ENOTFOUND;
    } else if (!PQgetisnull(res, 0, 0)) {
        const char *v = PQgetvalue(res, 0, 0);
        if (strcmp(v, "t") == 0)
            *out = 1;
        else if (strcmp(v, "f") == 0)
            *out = 0;
        else
            *out = (int64_t)strtoll(v, NULL, 10);
    }
    PQclear(res);
    return rc;
}

int ev_pgtest_query_i64(const char *url, const char *sql, int64_t *out)
{
    ev_db_t *db = NULL;
    *out = 0;
    int rc = ev_pgtest_connect(&db, url);
    if (rc < 0)
        return rc;
    rc = ev_pgtest_db_i64(db, sql, out);
    ev_db_free(db);
    return rc;
}

int64_t ev_pgtest_q64(ev_db_t *db, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    int64_t v = -1;
    CU_ASSERT_EQUAL(ev_pgtest_db_i64(db, sql, &v), 0);
    return v;
}

int ev_pgtest_open(char **url_out, ev_db_t **db_out)
{
    *db_out = NULL;
    int rc = ev_pgtest_create_db(url_out);
    if (rc == 0 && (rc = ev_pgtest_connect(db_out, *url_out)) != 0) {
        ev_pgtest_drop_db(*url_out);
        *url_out = NULL;
    }
    return rc;
}

void ev_pgtest_close(char *url, ev_db_t *db)
{
    ev_db_free(db);
    ev_pgtest_drop_db(url);
}

const char *ev_pgtest_status_of(ev_db_t *db, int64_t id)
{
    static char st[32];
    PGresult *res = NULL;
    char p[24];
    snprintf(p, sizeof(p), "%lld", (long long)id);
    const char *params[] = {p};
    st[0] = '\0';
    if (ev_db_exec(db, &res, "SELECT status FROM submissions WHERE id = $1::bigint", 1, params) ==
            0 &&
        PQntuples(res) == 1)
        snprintf(st, sizeof(st), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return st;
}
