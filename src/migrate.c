/*
 * migrate.c - applies the schema migrations embedded in the binary.
 *
 * What: brings a database up to the schema this binary was built with
 * (migrations/NNNN_name.sql, embedded by cmake/EmbedMigrations.cmake) and
 * refuses a database that is ahead of it.
 *
 * How: the whole run holds a session-level Postgres advisory lock, so several
 * replicas starting at once take turns: the first applies, the others find
 * everything recorded and apply nothing. schema_migrations is created here if
 * absent (not by a migration, so the bookkeeping exists before the first one
 * runs). Each missing migration runs in its own transaction together with the
 * row that records it, so a migration is either fully applied and recorded or
 * not at all. The migration text is a parameterless script (PQexec); the
 * bookkeeping statements use parameters.
 *
 * Threads: runs on the caller's thread with the caller's own ev_db_t. No
 * shared state, no locks in this process (the advisory lock is in Postgres).
 */
#include "ev/migrate.h"

#include "ev/error.h"
#include "ev/util.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Advisory lock key shared by every event-validator process: "ev_migra". */
#define MIGRATE_LOCK_KEY "7311705226580698721"

static bool known_version(const ev_migration_t *list, size_t count, int version)
{
    for (size_t i = 0; i < count; i++)
        if (list[i].version == version)
            return true;
    return false;
}

/* Applies one migration and records it, in one transaction. */
static int apply_one(ev_db_t *db, const ev_migration_t *m, char *err, size_t errlen)
{
    int rc = ev_db_exec(db, NULL, "BEGIN", 0, NULL);
    if (rc < 0) {
        ev_set_error(err, errlen, "migration %s: cannot begin: %s", m->name, ev_db_error(db));
        return rc;
    }
    rc = ev_db_exec_script(db, m->sql);
    if (rc < 0) {
        ev_set_error(err, errlen, "migration %s failed: %s", m->name, ev_db_error(db));
        goto out;
    }
    char ver[16];
    snprintf(ver, sizeof(ver), "%d", m->version);
    const char *params[] = {ver, m->name};
    rc = ev_db_exec(db, NULL, "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2)",
                    2, params);
    if (rc < 0) {
        ev_set_error(err, errlen, "migration %s: cannot record it: %s", m->name, ev_db_error(db));
        goto out;
    }
    rc = ev_db_exec(db, NULL, "COMMIT", 0, NULL);
    if (rc < 0)
        ev_set_error(err, errlen, "migration %s: commit failed: %s", m->name, ev_db_error(db));
out:
    if (rc < 0 && PQtransactionStatus(ev_db_conn(db)) != PQTRANS_IDLE)
        (void)ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
    return rc;
}

int ev_migrate_apply(ev_db_t *db, const ev_migration_t *list, size_t count, int *applied, char *err,
                     size_t errlen)
{
    int rc = 0, done = 0;
    bool locked = false;
    PGresult *res = NULL;
    bool *have = NULL;
    const char *lock_params[] = {MIGRATE_LOCK_KEY};

    if (applied)
        *applied = 0;
    if (err && errlen)
        err[0] = '\0';
    for (size_t i = 1; i < count; i++)
        EV_ASSERT(list[i - 1].version < list[i].version);

    rc = ev_db_ensure(db);
    if (rc < 0) {
        ev_set_error(err, errlen, "migrate: %s", ev_db_error(db));
        goto out;
    }
    rc = ev_db_exec(db, NULL, "SELECT pg_advisory_lock($1::bigint)", 1, lock_params);
    if (rc < 0) {
        ev_set_error(err, errlen, "migrate: cannot take the migration lock: %s", ev_db_error(db));
        goto out;
    }
    locked = true;

    rc = ev_db_exec(db, NULL,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version int PRIMARY KEY,"
                    " name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())",
                    0, NULL);
    if (rc < 0) {
        ev_set_error(err, errlen, "migrate: cannot create schema_migrations: %s", ev_db_error(db));
        goto out;
    }
    rc = ev_db_exec(db, &res, "SELECT version, name FROM schema_migrations ORDER BY version", 0,
                    NULL);
    if (rc < 0) {
        ev_set_error(err, errlen, "migrate: cannot read schema_migrations: %s", ev_db_error(db));
        goto out;
    }

    have = ev_calloc(count ? count : 1, sizeof(*have));
    int latest = count ? list[count - 1].version : 0;
    for (int r = PQntuples(res) - 1; r >= 0; r--) {
        int v = (int)strtol(PQgetvalue(res, r, 0), NULL, 10); /* an int column */
        if (!known_version(list, count, v)) {
            ev_set_error(
                err, errlen,
                "database has schema version %d (%s), which this event-validator does not "
                "know (it knows up to %d): upgrade event-validator before using this database",
                v, PQgetvalue(res, r, 1), latest);
            rc = EV_EVERSION;
            goto out;
        }
        for (size_t i = 0; i < count; i++)
            if (list[i].version == v)
                have[i] = true;
    }
    PQclear(res);
    res = NULL;

    for (size_t i = 0; i < count; i++) {
        if (have[i])
            continue;
        rc = apply_one(db, &list[i], err, errlen);
        if (rc < 0)
            goto out;
        done++;
    }

out:
    PQclear(res);
    free(have);
    /* If the session is gone the lock went with it. */
    if (locked && PQstatus(ev_db_conn(db)) == CONNECTION_OK)
        (void)ev_db_exec(db, NULL, "SELECT pg_advisory_unlock($1::bigint)", 1, lock_params);
    if (applied)
        *applied = done;
    return rc;
}

int ev_migrate_run(ev_db_t *db, int *applied, char *err, size_t errlen)
{
    return ev_migrate_apply(db, ev_migrations, ev_migrations_count, applied, err, errlen);
}
