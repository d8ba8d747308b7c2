/*
 * tokens.c - API bearer tokens: create, verify, list, revoke; see tokens.h.
 *
 * How: the token text carries its row id, so verification is one primary-key
 * lookup followed by a constant-time comparison of two SHA-256 digests (the
 * stored one and the presented text's). Looking the row up by the digest
 * itself would also work, but then the comparison happens inside an index
 * search whose time depends on the bytes; by id, the only secret-dependent
 * step is ev_hash_equal_ct. A missing row is compared against a dummy digest
 * so that an unknown id costs the same as a wrong secret.
 *
 * Threads: any thread, with the caller's own ev_db_t. No shared state, no
 * locks, no logging.
 */
#include "ev/tokens.h"

#include "ev/error.h"
#include "ev/hash.h"
#include "ev/stats.h"
#include "ev/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET_BYTES 32
#define PREFIX "ev_"

/* Parses "ev_<id>_<64 hex>"; false for anything else. */
static bool parse_token(const char *t, int64_t *id)
{
    size_t n = t ? strnlen(t, EV_TOKEN_MAX_LEN + 1) : 0;
    if (n == 0 || n > EV_TOKEN_MAX_LEN || strncmp(t, PREFIX, 3) != 0)
        return false;
    const char *p = t + 3;
    int64_t v = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 18) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || v <= 0 || *p++ != '_')
        return false;
    size_t hex = 0;
    for (; p[hex]; hex++)
        if (!((p[hex] >= '0' && p[hex] <= '9') || (p[hex] >= 'a' && p[hex] <= 'f')))
            return false;
    if (hex != 2 * SECRET_BYTES)
        return false;
    *id = v;
    return true;
}

int ev_tokens_create(ev_db_t *db, const char *name, bool admin, int64_t event_id, char **token,
                     int64_t *id, char *err, size_t errlen)
{
    int rc;
    PGresult *res = NULL;
    unsigned char secret[SECRET_BYTES];
    char secret_hex[2 * SECRET_BYTES + 1];
    char digest[EV_HASH_SHA256_HEX_LEN];
    char event_s[24], id_s[24];
    char *text = NULL;

    *token = NULL;
    *id = 0;
    if (!name || !*name || strlen(name) > EV_TOKEN_NAME_MAX || admin == (event_id > 0)) {
        ev_set_error(err, errlen,
                     "a token needs a name of 1 to %d bytes and either an event or admin scope",
                     EV_TOKEN_NAME_MAX);
        return EV_EINVAL;
    }
    if (ev_random_bytes(secret, sizeof(secret)) < 0) {
        ev_set_error(err, errlen, "cannot read random bytes from the kernel");
        return EV_EIO;
    }
    ev_hash_to_hex(secret_hex, secret, sizeof(secret));
    snprintf(event_s, sizeof(event_s), "%" PRId64, event_id);

    /* The id is part of the token text, so the row is inserted first with a
     * placeholder digest and completed in the same transaction. */
    rc = ev_db_exec(db, NULL, "BEGIN", 0, NULL);
    if (rc < 0)
        goto db_error;
    const char *ins[] = {name, admin ? "true" : "false", admin ? NULL : event_s};
    rc = ev_db_exec(db, &res,
                    "INSERT INTO api_tokens (name, token_hash, admin, event_id)"
                    " SELECT $1, '', $2::boolean, $3::bigint"
                    "  WHERE $3::bigint IS NULL OR EXISTS (SELECT 1 FROM events WHERE id = $3)"
                    " RETURNING id",
                    3, ins);
    if (rc < 0)
        goto db_error;
    if (PQntuples(res) != 1) {
        ev_set_error(err, errlen, "event %" PRId64 " does not exist", event_id);
        rc = EV_ENOTFOUND;
        goto out;
    }
    snprintf(id_s, sizeof(id_s), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    res = NULL;
    text = ev_asprintf(PREFIX "%s_%s", id_s, secret_hex);
    ev_hash_sha256_hex(digest, text, strlen(text));
    const char *upd[] = {id_s, digest};
    rc =
        ev_db_exec(db, NULL, "UPDATE api_tokens SET token_hash = $2 WHERE id = $1::bigint", 2, upd);
    if (rc < 0)
        goto db_error;
    rc = ev_db_exec(db, NULL, "COMMIT", 0, NULL);
    if (rc < 0)
        goto db_error;
    *id = strtoll(id_s, NULL, 10);
    *token = text;
    text = NULL;
    goto out;
db_error:
    ev_set_error(err, errlen, "database error while creating the token: %s", ev_db_error(db));
out:
    PQclear(res);
    if (rc < 0 && PQtransactionStatus(ev_db_conn(db)) != PQTRANS_IDLE)
        (void)ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
    if (text) {
        memset(text, 0, strlen(text));
        free(text);
    }
    memset(secret, 0, sizeof(secret));
    memset(secret_hex, 0, sizeof(secret_hex));
    return rc;
}

int ev_tokens_verify(ev_db_t *db, const char *token, ev_token_info_t *out)
{
    static const char dummy[EV_HASH_SHA256_HEX_LEN] =
        "0000000000000000000000000000000000000000000000000000000000000000";
    PGresult *res = NULL;
    char digest[EV_HASH_SHA256_HEX_LEN];
    char id_s[24];
    int64_t id = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!parse_token(token, &id))
        return EV_ENOTFOUND;
    snprintf(id_s, sizeof(id_s), "%" PRId64, id);
    const char *params[] = {id_s};
    rc = ev_db_exec(db, &res,
                    "SELECT token_hash, admin, coalesce(event_id, 0) FROM api_tokens"
                    " WHERE id = $1::bigint AND revoked_at IS NULL",
                    1, params);
    if (rc < 0)
        return rc;
    bool found = PQntuples(res) == 1 && PQgetlength(res, 0, 0) == EV_HASH_SHA256_HEX_LEN - 1;
    const char *stored = found ? PQgetvalue(res, 0, 0) : dummy;
    ev_hash_sha256_hex(digest, token, strlen(token));
    bool equal = ev_hash_equal_ct(digest, stored, EV_HASH_SHA256_HEX_LEN - 1);
    if (!found || !equal) {
        rc = EV_ENOTFOUND;
        goto out;
    }
    out->id = id;
    out->scope = PQgetvalue(res, 0, 1)[0] == 't' ? EV_TOKEN_SCOPE_ADMIN : EV_TOKEN_SCOPE_EVENT;
    out->event_id = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    PQclear(res);
    res = NULL;
    /* Bounded write rate: at most one update per token per minute. */
    rc = ev_db_exec(db, NULL,
                    "UPDATE api_tokens SET last_used_at = now() WHERE id = $1::bigint"
                    " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
                    1, params);
out:
    PQclear(res);
    if (rc < 0 && rc != EV_ENOTFOUND)
        memset(out, 0, sizeof(*out));
    return rc;
}

bool ev_tokens_allows_event(const ev_token_info_t *info, int64_t event_id)
{
    return info->scope == EV_TOKEN_SCOPE_ADMIN ||
           (info->scope == EV_TOKEN_SCOPE_EVENT && info->event_id == event_id && event_id > 0);
}

int ev_tokens_list(ev_db_t *db, char **text)
{
    PGresult *res = NULL;
    ev_stats_buf_t b = {0};

    *text = NULL;
    int rc =
        ev_db_exec(db, &res,
                   "SELECT id, name, CASE WHEN admin THEN 'admin' ELSE 'event ' || event_id END,"
                   " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
                   " coalesce(to_char(last_used_at AT TIME ZONE 'UTC',"
                   "   'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '-'),"
                   " coalesce(to_char(revoked_at AT TIME ZONE 'UTC',"
                   "   'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '-')"
                   " FROM api_tokens ORDER BY id",
                   0, NULL);
    if (rc < 0)
        return rc;
    ev_stats_buf_printf(&b, "%-6s %-24s %-14s %-20s %-20s %s\n", "ID", "NAME", "SCOPE", "CREATED",
                        "LAST USED", "REVOKED");
    for (int r = 0; r < PQntuples(res); r++)
        ev_stats_buf_printf(&b, "%-6s %-24s %-14s %-20s %-20s %s\n", PQgetvalue(res, r, 0),
                            PQgetvalue(res, r, 1), PQgetvalue(res, r, 2), PQgetvalue(res, r, 3),
                            PQgetvalue(res, r, 4), PQgetvalue(res, r, 5));
    PQclear(res);
    *text = b.data;
    return 0;
}

int ev_tokens_revoke(ev_db_t *db, int64_t id)
{
    PGresult *res = NULL;
    char id_s[24];
    snprintf(id_s, sizeof(id_s), "%" PRId64, id);
    const char *params[] = {id_s};
    int rc = ev_db_exec(db, &res,
                        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())"
                        " WHERE id = $1::bigint",
                        1, params);
    if (rc < 0)
        return rc;
    rc = strtoll(PQcmdTuples(res), NULL, 10) == 1 ? 0 : EV_ENOTFOUND;
    PQclear(res);
    return rc;
}
