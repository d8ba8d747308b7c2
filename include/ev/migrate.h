/*
 * migrate.h - applies the schema migrations embedded in the binary.
 *
 * migrations/NNNN_name.sql are compiled into the binary (cmake/EmbedMigrations.cmake
 * generates the ev_migrations table, sorted by version). ev_migrate_run applies
 * each missing one in its own transaction under a Postgres advisory lock, records
 * it in schema_migrations, and refuses a database that has a version this binary
 * does not know (EV_EVERSION).
 */
#ifndef EV_MIGRATE_H
#define EV_MIGRATE_H

#include "ev/db.h"

#include <stddef.h>

typedef struct ev_migration {
    int version;      /* NNNN */
    const char *name; /* "0001_init" */
    const char *sql;
} ev_migration_t;

extern const ev_migration_t ev_migrations[];
extern const size_t ev_migrations_count;

/* Applies pending migrations. *applied (may be NULL) gets how many were applied
 * now. Returns 0, EV_EVERSION (database newer than binary; err explains),
 * EV_EDB or EV_EDBCONN. err (errlen bytes) gets one line on failure. */
int ev_migrate_run(ev_db_t *db, int *applied, char *err, size_t errlen);

/* The same for an explicit list (sorted by ascending, distinct version):
 * ev_migrate_run is ev_migrate_apply(db, ev_migrations, ev_migrations_count,
 * ...). For tests that need a migration that fails half-way. */
int ev_migrate_apply(ev_db_t *db, const ev_migration_t *list, size_t count, int *applied, char *err,
                     size_t errlen);

#endif
