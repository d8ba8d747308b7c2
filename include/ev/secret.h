/*
 * secret.h - API keys in a type whose only use is building an auth header.
 *
 * There is deliberately no accessor returning the raw key. Nothing can print
 * a secret; ev_secret_fingerprint() gives a non-reversible tag for logs
 * ("len=39,tail=****"). Immutable after creation: safe to share across
 * threads. The memory is wiped on free.
 */
#ifndef EV_SECRET_H
#define EV_SECRET_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ev_secret ev_secret_t;

/* Copies `value` (trailing whitespace/newlines trimmed). Returns 0, or
 * EV_EINVAL for an empty value. *out is NULL on failure. */
int ev_secret_new(ev_secret_t **out, const char *value);
void ev_secret_free(ev_secret_t *s);

/* Builds "<prefix><key>" (e.g. "Authorization: Bearer " or
 * "x-goog-api-key: ") into a newly allocated string the caller must free with
 * ev_secret_header_free (which wipes it). */
char *ev_secret_header(const ev_secret_t *s, const char *prefix);
void ev_secret_header_free(char *header);

/* True when `text` contains the secret (used by tests and log scans). */
bool ev_secret_appears_in(const ev_secret_t *s, const char *text, size_t len);

/* The key's length in bytes (not secret: real keys are 39-56 characters). */
size_t ev_secret_length(const ev_secret_t *s);

/* True when text (len bytes) is exactly the secret, compared in constant
 * time (for tokens presented by clients). False for NULL. */
bool ev_secret_equals(const ev_secret_t *s, const char *text, size_t len);

/* A printable, non-reversible description: "set (39 chars)". Static string. */
const char *ev_secret_describe(const ev_secret_t *s);

#endif
