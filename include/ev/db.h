/*
 * db.h - one Postgres connection owned by one thread, with reconnect.
 *
 * An ev_db_t wraps a PGconn. It is never shared between threads (libpq rule):
 * each worker, the stats server and the CLI own their own. ev_db_ensure()
 * reconnects a broken connection (the caller decides on backoff), re-issuing
 * any LISTEN registered with ev_db_listen().
 */
#ifndef EV_DB_H
#define EV_DB_H

#include <libpq-fe.h>
#include <stddef.h>

typedef struct ev_db ev_db_t;

/* Connects to `url` (URI or conninfo). On failure returns EV_EDBCONN with a
 * one-line reason in err (never containing a password) and *out is NULL. */
int ev_db_connect(ev_db_t **out, const char *url, char *err, size_t errlen);
void ev_db_free(ev_db_t *db);

/* The underlying connection, for issuing queries. Owned by db. */
PGconn *ev_db_conn(ev_db_t *db);

/* 0 if the connection is usable (reconnecting once if it was broken),
 * EV_EDBCONN otherwise. */
int ev_db_ensure(ev_db_t *db);

/* LISTEN on `channel`; remembered and re-issued after a reconnect. */
int ev_db_listen(ev_db_t *db, const char *channel);

/* Waits up to timeout_ms for a NOTIFY on a listened channel. Returns 1 when
 * one (or more) arrived, 0 on timeout, EV_EDBCONN if the connection broke. */
int ev_db_wait_notify(ev_db_t *db, int timeout_ms);

/* Runs a statement with text params; returns 0 or EV_EDB/EV_EDBCONN; the
 * PGresult (if res != NULL) is the caller's to PQclear. */
int ev_db_exec(ev_db_t *db, PGresult **res, const char *sql, int nparams,
               const char *const *params);

/* As ev_db_exec, but every result column comes back in binary format (for
 * bytea content: no hex decoding, PQgetlength is the byte count). */
int ev_db_exec_binary(ev_db_t *db, PGresult **res, const char *sql, int nparams,
                      const char *const *params);

/* The last error message of the connection, one line, for logs. */
const char *ev_db_error(ev_db_t *db);

/* The SQLSTATE of the last failed ev_db_exec/ev_db_exec_script ("23505" for a
 * unique violation, ...), or "" when there is none. Owned by db. */
const char *ev_db_sqlstate(ev_db_t *db);

/* Runs a parameterless script of one or more statements (PQexec), for schema
 * migrations and tests only: never build SQL from values, use ev_db_exec.
 * Returns 0 or EV_EDB/EV_EDBCONN (message in ev_db_error). */
int ev_db_exec_script(ev_db_t *db, const char *sql);

/* A copy of s that Postgres accepts as text: at most max_bytes bytes, cut on
 * a UTF-8 character boundary, invalid UTF-8 bytes replaced by '?', control
 * characters other than newline and tab replaced by a space. NULL for NULL.
 * The caller frees. Any thread. */
char *ev_db_clip_text(const char *s, size_t max_bytes);

#endif
