/*
 * db.c - one Postgres connection owned by one thread, with reconnect.
 *
 * What: a thin wrapper around a libpq PGconn that classifies failures into
 * EV_EDB (the statement failed, the connection is fine) and EV_EDBCONN (the
 * connection is gone), reconnects on demand, remembers LISTEN channels so a
 * reconnect re-issues them, and waits for notifications with poll(2).
 *
 * How: connections are opened with PQconnectdbParams, with a few defaults
 * placed before the caller's URL so the URL can override them (connect
 * timeout, keepalives, UTF-8 client encoding, application name). Notices are
 * swallowed (helper modules never log; libpq would print them on stderr).
 * Every message kept for the caller goes through redact(), which turns the
 * message into one line and removes any password taken from the URL, because
 * libpq echoes parts of a malformed connection string in its errors.
 * Statements with parameters are prepared on first use in each session (see
 * stmt_lookup), so the hot path's ~15 statements per submission are parsed
 * and planned once per connection, not once per call.
 *
 * Threads: an ev_db_t is used by exactly one thread at a time (the libpq
 * rule); nothing here is shared, so there are no locks. ev_db_clip_text is a
 * pure function, safe from any thread.
 */
#include "ev/db.h"

#include "ev/error.h"
#include "ev/utf8.h"
#include "ev/util.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Parameterised statements are prepared once per connection and then run
 * with PQexecPrepared: Postgres parses and plans each text once instead of on
 * every call. Keyed by the SQL text (the pointer is only a fast path: a freed
 * and reused buffer may hold another text). */
#define STMT_CACHE_MAX 64

typedef struct stmt {
    const char *ptr; /* where the text was last seen */
    char *sql;       /* owned copy of the text */
} stmt_t;

struct ev_db {
    PGconn *conn;
    stmt_t stmts[STMT_CACHE_MAX]; /* prepared as "ev_s<index>" on this connection */
    int nstmts;
    char *url;       /* as given; needed to know which secrets to redact */
    char **channels; /* LISTEN channels to re-issue after a reconnect */
    size_t nchannels;
    bool missed;      /* reconnected: notifications may have been lost */
    char err[512];    /* last error, one line, redacted */
    char sqlstate[6]; /* SQLSTATE of the last failed statement, or "" */
};

/* ---------------------------------------------------------------------------
 * Secrets and one-line messages
 * ------------------------------------------------------------------------- */

#define MAX_SECRETS 4

typedef struct secrets {
    char *s[MAX_SECRETS];
    size_t n;
} secrets_t;

static void secrets_add(secrets_t *sec, const char *p, size_t len)
{
    if (len == 0 || sec->n == MAX_SECRETS)
        return;
    sec->s[sec->n++] = ev_strndup(p, len);
}

static void secrets_free(secrets_t *sec)
{
    for (size_t i = 0; i < sec->n; i++)
        free(sec->s[i]);
    sec->n = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Collects every form in which the URL's password could show up in a libpq
 * message: the value libpq parsed, and, because a URL libpq cannot parse still
 * gets echoed, what a URI's userinfo or a conninfo "password=" holds, raw and
 * percent-decoded.
 */
static void secrets_collect(secrets_t *sec, const char *url)
{
    if (!url)
        return;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (opts) {
        for (PQconninfoOption *o = opts; o->keyword; o++)
            if (strcmp(o->keyword, "password") == 0 && o->val)
                secrets_add(sec, o->val, strlen(o->val));
        PQconninfoFree(opts);
    }
    PQfreemem(perr);

    const char *p = NULL;
    if (strncmp(url, "postgresql://", 13) == 0)
        p = url + 13;
    else if (strncmp(url, "postgres://", 11) == 0)
        p = url + 11;
    if (p) {
        /* libpq's URI parser: userinfo runs up to the first '@' before any '/'. */
        const char *end = p;
        while (*end && *end != '@' && *end != '/')
            end++;
        const char *colon = memchr(p, ':', (size_t)(end - p));
        if (*end == '@' && colon) {
            const char *pw = colon + 1;
            size_t len = (size_t)(end - pw);
            secrets_add(sec, pw, len);
            char *dec = ev_malloc(len + 1);
            size_t o = 0;
            for (size_t i = 0; i < len; i++) {
                int hi, lo;
                if (pw[i] == '%' && i + 2 < len && (hi = hexval(pw[i + 1])) >= 0 &&
                    (lo = hexval(pw[i + 2])) >= 0) {
                    dec[o++] = (char)(hi * 16 + lo);
                    i += 2;
                } else {
                    dec[o++] = pw[i];
                }
            }
            if (o != len || memcmp(dec, pw, len) != 0)
                secrets_add(sec, dec, o);
            free(dec);
        }
        return;
    }
    /* conninfo: password = value | password = 'quoted value' */
    for (const char *k = strstr(url, "password"); k; k = strstr(k + 1, "password")) {
        const char *v = k + 8;
        while (*v == ' ' || *v == '\t')
            v++;
        if (*v != '=')
            continue;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        const char *e = v;
        if (*v == '\'') {
            v++;
            e = v;
            while (*e && *e != '\'')
                e += (*e == '\\' && e[1]) ? 2 : 1;
        } else {
            while (*e && *e != ' ' && *e != '\t' && *e != '\n')
                e++;
        }
        secrets_add(sec, v, (size_t)(e - v));
    }
}

/*
 * Writes msg into out (outlen bytes) as one line: line breaks and tabs become
 * single spaces, surrounding blanks go, and every secret becomes "***".
 */
static void redact(char *out, size_t outlen, const char *prefix, const char *msg, const char *url)
{
    if (outlen == 0)
        return;
    secrets_t sec = {{0}, 0};
    secrets_collect(&sec, url);
    char *full = ev_asprintf("%s%s", prefix ? prefix : "", msg ? msg : "");
    size_t o = 0;
    bool space = true; /* drops leading blanks and collapses runs */
    for (const char *p = full; *p && o + 1 < outlen;) {
        size_t hit = 0;
        for (size_t i = 0; i < sec.n && !hit; i++) {
            size_t len = strlen(sec.s[i]);
            if (strncmp(p, sec.s[i], len) == 0)
                hit = len;
        }
        if (hit) {
            for (const char *r = "***"; *r && o + 1 < outlen; r++)
                out[o++] = *r;
            p += hit;
            space = false;
            continue;
        }
        char c = *p++;
        if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
            if (!space)
                out[o++] = ' ';
            space = true;
            continue;
        }
        out[o++] = c;
        space = false;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
    free(full);
    secrets_free(&sec);
}

static void set_err(ev_db_t *db, const char *prefix, const char *msg)
{
    redact(db->err, sizeof(db->err), prefix, msg && *msg ? msg : "unknown error", db->url);
}

/* libpq prints notices (for example "relation already exists, skipping") on
 * stderr by default; a helper module stays quiet. */
static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* ---------------------------------------------------------------------------
 * Connection
 * ------------------------------------------------------------------------- */

int ev_db_connect(ev_db_t **out, const char *url, char *err, size_t errlen)
{
    int rc = 0;
    ev_db_t *db = NULL;
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!url || !*url) {
        if (err && errlen)
            snprintf(err, errlen, "database URL is empty");
        rc = EV_EDBCONN;
        goto out;
    }

    db = ev_calloc(1, sizeof(*db));
    db->url = ev_strdup(url);
    /* Defaults first: the URL's own values (expanded from dbname) win. */
    const char *const keys[] = {
        "connect_timeout",     "application_name", "client_encoding", "keepalives_idle",
        "keepalives_interval", "keepalives_count", "dbname",          NULL};
    const char *const vals[] = {"10", "event-validator", "UTF8", "30", "10", "3", url, NULL};
    db->conn = PQconnectdbParams(keys, vals, 1);
    if (!db->conn) {
        if (err && errlen)
            snprintf(err, errlen, "cannot connect to database: out of memory");
        rc = EV_EDBCONN;
        goto out;
    }
    if (PQstatus(db->conn) != CONNECTION_OK) {
        if (err && errlen)
            redact(err, errlen, "cannot connect to database: ", PQerrorMessage(db->conn), url);
        rc = EV_EDBCONN;
        goto out;
    }
    PQsetNoticeProcessor(db->conn, quiet_notice, NULL);
    *out = db;
    db = NULL;
out:
    ev_db_free(db);
    return rc;
}

static void stmt_cache_clear(ev_db_t *db)
{
    for (int i = 0; i < db->nstmts; i++)
        free(db->stmts[i].sql);
    db->nstmts = 0;
}

void ev_db_free(ev_db_t *db)
{
    if (!db)
        return;
    stmt_cache_clear(db);
    if (db->conn)
        PQfinish(db->conn);
    for (size_t i = 0; i < db->nchannels; i++)
        free(db->channels[i]);
    free(db->channels);
    free(db->url);
    free(db);
}

PGconn *ev_db_conn(ev_db_t *db)
{
    return db->conn;
}

const char *ev_db_error(ev_db_t *db)
{
    return db->err[0] ? db->err : "no error";
}

const char *ev_db_sqlstate(ev_db_t *db)
{
    return db->sqlstate;
}

static int issue_listen(ev_db_t *db, const char *channel)
{
    int rc = 0;
    char *ident = PQescapeIdentifier(db->conn, channel, strlen(channel));
    if (!ident) {
        set_err(db, "LISTEN: ", PQerrorMessage(db->conn));
        return PQstatus(db->conn) == CONNECTION_OK ? EV_EDB : EV_EDBCONN;
    }
    /* LISTEN takes no parameters; the channel is quoted as an identifier. */
    char *sql = ev_asprintf("LISTEN %s", ident);
    rc = ev_db_exec(db, NULL, sql, 0, NULL);
    free(sql);
    PQfreemem(ident);
    return rc;
}

int ev_db_ensure(ev_db_t *db)
{
    if (PQstatus(db->conn) != CONNECTION_OK) {
        PQreset(db->conn);
        stmt_cache_clear(db); /* prepared statements died with the old session */
        if (PQstatus(db->conn) != CONNECTION_OK) {
            set_err(db, "cannot reconnect to database: ", PQerrorMessage(db->conn));
            return EV_EDBCONN;
        }
        /* Anything notified while we were away is lost: the next wait
         * reports a wake-up so the caller looks for work at once. */
        db->missed = true;
        for (size_t i = 0; i < db->nchannels; i++) {
            int rc = issue_listen(db, db->channels[i]);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    /* A statement failed inside a transaction someone left open: nothing
     * but ROLLBACK can run on it, so make the connection usable again. */
    if (PQtransactionStatus(db->conn) == PQTRANS_INERROR)
        return ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
    return 0;
}

int ev_db_listen(ev_db_t *db, const char *channel)
{
    if (!channel || !*channel)
        return EV_EINVAL;
    int rc = issue_listen(db, channel);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < db->nchannels; i++)
        if (strcmp(db->channels[i], channel) == 0)
            return 0;
    db->channels = ev_realloc(db->channels, (db->nchannels + 1) * sizeof(*db->channels));
    db->channels[db->nchannels++] = ev_strdup(channel);
    return 0;
}

/* Drops every queued notification; returns how many there were. */
static int drain_notifies(ev_db_t *db)
{
    int n = 0;
    PGnotify *nf;
    while ((nf = PQnotifies(db->conn)) != NULL) {
        PQfreemem(nf);
        n++;
    }
    return n;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ev_db_wait_notify(ev_db_t *db, int timeout_ms)
{
    if (db->missed) {
        db->missed = false;
        return 1;
    }
    if (PQstatus(db->conn) != CONNECTION_OK) {
        set_err(db, "connection lost: ", PQerrorMessage(db->conn));
        return EV_EDBCONN;
    }
    /* Notifications may already have arrived during an earlier query. */
    if (!PQconsumeInput(db->conn)) {
        set_err(db, "connection lost: ", PQerrorMessage(db->conn));
        return EV_EDBCONN;
    }
    if (drain_notifies(db) > 0)
        return 1;

    int64_t deadline = mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return 0;
        int sock = PQsocket(db->conn);
        if (sock < 0) {
            set_err(db, "connection lost: ", "no socket");
            return EV_EDBCONN;
        }
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        int n = poll(&pfd, 1, (int)EV_MIN(left, 60000));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            set_err(db, "poll on database socket: ", strerror(errno));
            return EV_EDBCONN;
        }
        if (n == 0)
            continue; /* re-evaluates the deadline */
        if (!PQconsumeInput(db->conn) || PQstatus(db->conn) != CONNECTION_OK) {
            set_err(db, "connection lost: ", PQerrorMessage(db->conn));
            return EV_EDBCONN;
        }
        if (drain_notifies(db) > 0)
            return 1;
    }
}

/* ---------------------------------------------------------------------------
 * Statements
 * ------------------------------------------------------------------------- */

/* Class 08 (connection exception) and the shutdown codes of class 57 mean the
 * session is gone even when libpq has not noticed yet. */
static bool sqlstate_is_conn(const char *st)
{
    return strncmp(st, "08", 2) == 0 || strcmp(st, "57P01") == 0 || strcmp(st, "57P02") == 0 ||
           strcmp(st, "57P03") == 0;
}

/* Classifies a result; takes ownership of res unless it is kept in *keep. */
static int finish(ev_db_t *db, PGresult *res, PGresult **keep)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc = 0;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
        db->sqlstate[0] = '\0';
        if (keep) {
            *keep = res;
            res = NULL;
        }
        goto out;
    }
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(db->sqlstate, sizeof(db->sqlstate), "%s", state ? state : "");
    if (res && PQresultErrorMessage(res)[0])
        set_err(db, NULL, PQresultErrorMessage(res));
    else
        set_err(db, NULL, PQerrorMessage(db->conn));
    rc = (PQstatus(db->conn) != CONNECTION_OK || sqlstate_is_conn(db->sqlstate)) ? EV_EDBCONN
                                                                                 : EV_EDB;
out:
    PQclear(res);
    return rc;
}

/* The prepared statement for `sql`, preparing it on first use; -1 runs the
 * text unprepared (no parameters, cache full, or PREPARE refused: the
 * unprepared run then reports any error itself). */
static int stmt_lookup(ev_db_t *db, const char *sql, int nparams)
{
    if (nparams == 0)
        return -1;
    for (int i = 0; i < db->nstmts; i++)
        if (db->stmts[i].ptr == sql && strcmp(db->stmts[i].sql, sql) == 0)
            return i;
    for (int i = 0; i < db->nstmts; i++) {
        if (strcmp(db->stmts[i].sql, sql) == 0) {
            db->stmts[i].ptr = sql;
            return i;
        }
    }
    if (db->nstmts == STMT_CACHE_MAX)
        return -1;
    char name[32];
    snprintf(name, sizeof(name), "ev_s%d", db->nstmts);
    PGresult *r = PQprepare(db->conn, name, sql, nparams, NULL);
    bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok)
        return -1;
    db->stmts[db->nstmts] = (stmt_t){sql, ev_strdup(sql)};
    return db->nstmts++;
}

static int exec_format(ev_db_t *db, PGresult **res, const char *sql, int nparams,
                       const char *const *params, int result_format)
{
    if (res)
        *res = NULL;
    if (PQstatus(db->conn) != CONNECTION_OK) {
        set_err(db, "connection lost: ", PQerrorMessage(db->conn));
        return EV_EDBCONN;
    }
    PGresult *r;
    int idx = stmt_lookup(db, sql, nparams);
    if (idx >= 0) {
        char name[32];
        snprintf(name, sizeof(name), "ev_s%d", idx);
        r = PQexecPrepared(db->conn, name, nparams, params, NULL, NULL, result_format);
    } else {
        r = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, result_format);
    }
    return finish(db, r, res);
}

int ev_db_exec(ev_db_t *db, PGresult **res, const char *sql, int nparams, const char *const *params)
{
    return exec_format(db, res, sql, nparams, params, 0);
}

int ev_db_exec_binary(ev_db_t *db, PGresult **res, const char *sql, int nparams,
                      const char *const *params)
{
    return exec_format(db, res, sql, nparams, params, 1);
}

int ev_db_exec_script(ev_db_t *db, const char *sql)
{
    if (PQstatus(db->conn) != CONNECTION_OK) {
        set_err(db, "connection lost: ", PQerrorMessage(db->conn));
        return EV_EDBCONN;
    }
    return finish(db, PQexec(db->conn, sql), NULL);
}

/* ---------------------------------------------------------------------------
 * Text for the database
 * ------------------------------------------------------------------------- */

char *ev_db_clip_text(const char *s, size_t max_bytes)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *out = ev_malloc(EV_MIN(n, max_bytes) + 1);
    size_t i = 0, o = 0;
    while (i < n) {
        const unsigned char *p = (const unsigned char *)s + i;
        uint32_t cp;
        size_t len = ev_utf8_decode(p, n - i, &cp);
        if (o + (len ? len : 1) > max_bytes)
            break;
        if (len == 0) {
            out[o++] = '?';
            i++;
        } else if (len == 1) {
            bool ctrl = (*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7F;
            out[o++] = ctrl ? ' ' : (char)*p;
            i++;
        } else {
            memcpy(out + o, p, len);
            o += len;
            i += len;
        }
    }
    out[o] = '\0';
    return out;
}
