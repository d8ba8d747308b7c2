/*
 * pgtest.h - throwaway Postgres databases for tests.
 *
 * The server comes from DATABASE_URL (exported by scripts/test.sh, or by
 * `eval "$(scripts/pg-harness.sh start DIR)"`). Each call to
 * ev_pgtest_create_db makes a new database named evtest_<pid>_<n>_<random>,
 * so tests in parallel processes (ctest -j) never share one. A test that
 * needs Postgres and finds no DATABASE_URL fails loudly: these functions
 * print the reason on stderr and return a negative EV_E* code.
 *
 * Thread-safe: every function opens and closes its own connection.
 */
#ifndef EV_PGTEST_H
#define EV_PGTEST_H

#include "ev/db.h"

#include <stdint.h>

/* Creates a fresh database, runs ev_migrate_run on it, and sets *url_out to a
 * connection string for it (free with ev_pgtest_drop_db). 0 or EV_ECONFIG
 * (DATABASE_URL unset), EV_EDBCONN, EV_EDB; *url_out is NULL on failure. */
int ev_pgtest_create_db(char **url_out);

/* The same without running the migrations (for migration tests). */
int ev_pgtest_create_empty_db(char **url_out);

/* Drops a database made by ev_pgtest_create_db (terminating any session
 * still connected) and frees url. Refuses names not starting with
 * "evtest_". Accepts NULL. */
void ev_pgtest_drop_db(char *url);

/* Connects to url; prints the reason and returns the code on failure. */
int ev_pgtest_connect(ev_db_t **out, const char *url);

/* Runs a parameterless SQL script on url (its own connection). 0 or the
 * code; the error is printed on stderr. */
int ev_pgtest_exec(const char *url, const char *sql);

/* Runs sql on db and stores the first column of the first row as an integer
 * (0 if NULL). EV_ENOTFOUND if there is no row. Prints errors. */
int ev_pgtest_db_i64(ev_db_t *db, const char *sql, int64_t *out);

/* The same on its own connection to url. */
int ev_pgtest_query_i64(const char *url, const char *sql, int64_t *out);

/* One integer from SQL formatted from trusted test constants (at most 1 KiB),
 * run on db; a failed query is a CUnit assertion failure. */
int64_t ev_pgtest_q64(ev_db_t *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The status of submission id on db ("" when there is none). Returns a
 * static buffer, overwritten by the next call: one thread only. */
const char *ev_pgtest_status_of(ev_db_t *db, int64_t id);

/* A suite's fixture: a fresh migrated database (ev_pgtest_create_db) and one
 * connection to it. 0, or the code (printed) with nothing left to close. */
int ev_pgtest_open(char **url_out, ev_db_t **db_out);

/* Undoes ev_pgtest_open: closes db, drops the database, frees url. */
void ev_pgtest_close(char *url, ev_db_t *db);

#endif
