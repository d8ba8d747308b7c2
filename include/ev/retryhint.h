/*
 * retryhint.h - parsers for the delays providers suggest before a retry.
 *
 * Inputs come from the network, so every parser accepts any NUL-terminated
 * string (or NULL) without crashing, overflowing or reading past the end; they
 * are fuzzed. Results are whole milliseconds, rounded UP so a caller never
 * waits less than the server asked, and saturated at EV_RETRYHINT_MAX_MS.
 * On failure *ms is set to -1 ("no hint"). Pure functions; any thread; they
 * never log.
 */
#ifndef EV_RETRYHINT_H
#define EV_RETRYHINT_H

#include <stdint.h>

/* Larger hints are clamped to this (7 days): the caller falls back anyway. */
#define EV_RETRYHINT_MAX_MS ((int64_t)7 * 24 * 3600 * 1000)

/* Gemini google.rpc.RetryInfo.retryDelay: a decimal number of seconds
 * followed by 's' ("26s", "1.5s", "0.5s"); surrounding blanks tolerated.
 * Returns 0, or EV_EPARSE (garbage, negative) / EV_EINVAL (NULL). */
int ev_retryhint_gemini_delay(int64_t *ms, const char *s);

/* HTTP Retry-After header: integer or fractional seconds ("2", "2.5").
 * An HTTP-date is tolerated: returns 0 with *ms = -1 (no usable relative
 * hint). Returns EV_EPARSE for garbage, EV_EINVAL for NULL. */
int ev_retryhint_retry_after(int64_t *ms, const char *s);

/* A Go-style duration as in Groq's x-ratelimit-reset-* headers: one or more
 * <decimal><unit> terms with units h, m, s, ms, us (or µs), ns ("2m59.56s",
 * "7.66s", "120ms", "1h2m3s"); a bare "0" is zero. The whole string must be
 * consumed (blanks around it tolerated). Returns 0, EV_EPARSE or EV_EINVAL. */
int ev_retryhint_duration(int64_t *ms, const char *s);

/* Finds "retry in <duration>" or "try again in <duration>" (case-insensitive)
 * in a provider's error message, e.g. "Please retry in 53.01s." or
 * "Please try again in 2m59.56s." Returns 0, EV_ENOTFOUND when no phrase
 * with a parsable duration is present, or EV_EINVAL for NULL. */
int ev_retryhint_from_message(int64_t *ms, const char *msg);

#endif
