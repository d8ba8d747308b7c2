/*
 * tokens.h - bearer tokens of the organisers' API and of admin actions.
 *
 * A token is the text "ev_<id>_<64 hex digits>": the id names its row in
 * api_tokens, the 64 hex digits are 32 random bytes from the kernel. Only the
 * SHA-256 of the whole text is stored, so the token itself exists once: in
 * the output of ev_tokens_create. Verification looks the row up by id and
 * compares the stored digest with the digest of the presented text in
 * constant time; a malformed, unknown or revoked token takes the same path.
 *
 * Scopes: an admin token may act on every event and create events; an event
 * token may act only on its own event.
 *
 * Secrets: token texts never appear in errors, logs or return values other
 * than ev_tokens_create's *token. Functions take the caller's own ev_db_t
 * (one per thread) and never log. Any thread.
 */
#ifndef EV_TOKENS_H
#define EV_TOKENS_H

#include "ev/db.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest token text accepted ("ev_" + 19-digit id + "_" + 64 hex). */
#define EV_TOKEN_MAX_LEN 96
/* Longest token name stored. */
#define EV_TOKEN_NAME_MAX 200

typedef enum {
    EV_TOKEN_SCOPE_EVENT = 1, /* may submit to and read one event */
    EV_TOKEN_SCOPE_ADMIN = 2, /* may do anything, including creating events */
} ev_token_scope_t;

/* What a valid token may do. */
typedef struct ev_token_info {
    int64_t id;
    ev_token_scope_t scope;
    int64_t event_id; /* EV_TOKEN_SCOPE_EVENT: its event; 0 for admin tokens */
} ev_token_info_t;

/*
 * Creates a token named `name` (non-empty, at most EV_TOKEN_NAME_MAX bytes)
 * that is an admin token when `admin`, else bound to `event_id`.
 * On success *token is the token text (NUL-terminated, caller frees with
 * free(); show it once and forget it) and *id its row id.
 * EV_EINVAL (bad name, admin with an event or neither), EV_ENOTFOUND (no such
 * event), EV_EIO (no randomness), EV_EDB/EV_EDBCONN. err gets one line.
 */
int ev_tokens_create(ev_db_t *db, const char *name, bool admin, int64_t event_id, char **token,
                     int64_t *id, char *err, size_t errlen);

/*
 * Checks a presented token text (e.g. the part of "Authorization: Bearer X"
 * after the scheme; NULL allowed). 0 with *out filled when the token exists
 * and is not revoked; EV_ENOTFOUND for anything else (malformed, unknown,
 * revoked, wrong secret: the caller answers 401 and cannot tell them apart);
 * EV_EDB/EV_EDBCONN on database trouble (answer 503). Refreshes the token's
 * last_used_at at most once a minute. This is the one check every caller
 * (the API, admin actions of the dashboard) uses.
 */
int ev_tokens_verify(ev_db_t *db, const char *token, ev_token_info_t *out);

/* True when `info` may act on event `event_id` (admin, or its own event). */
bool ev_tokens_allows_event(const ev_token_info_t *info, int64_t event_id);

/*
 * `token list`: *text receives one line per token (id, name, scope,
 * created, last used, revoked), a header line first; caller frees.
 */
int ev_tokens_list(ev_db_t *db, char **text);

/* Revokes token `id` (idempotent). EV_ENOTFOUND when no such token. */
int ev_tokens_revoke(ev_db_t *db, int64_t id);

#endif
