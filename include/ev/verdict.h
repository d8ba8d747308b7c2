/*
 * verdict.h - turns a model's answer text into a trusted verdict.
 *
 * Models are asked for one JSON object {"valid": bool, "score": 0..1,
 * "reason": "..."}. Even in JSON mode they wrap it in ```json fences, put
 * prose around it, truncate it, or use the wrong types (PROVIDERS.md failure
 * mode 5). ev_verdict_parse strips a fence that wraps the whole text, takes
 * the first balanced object, and validates every field's type and range;
 * an object that repeats a top-level key ({"valid":false,...,"valid":true})
 * is ambiguous and refused, never "last key wins"; anything else wrong is
 * EV_EPARSE with a short reason. The reason is cleaned before anyone stores
 * or shows it: terminal escape sequences and bidirectional controls removed,
 * other control characters as spaces, capped. Pure function; any thread.
 */
#ifndef EV_VERDICT_H
#define EV_VERDICT_H

#include <stdbool.h>
#include <stddef.h>

#define EV_VERDICT_REASON_MAX 1000

typedef struct ev_verdict {
    bool valid;
    double score;                           /* 0..1 */
    char reason[EV_VERDICT_REASON_MAX + 1]; /* non-empty, valid UTF-8, no control characters */
} ev_verdict_t;

/* Parses `text` (len bytes, need not be NUL-terminated). Returns 0 and fills
 * *out, or EV_EPARSE with `why` (whylen bytes, may be NULL) describing what
 * was wrong ("no JSON object", "field 'valid' is not a boolean", ...). */
int ev_verdict_parse(ev_verdict_t *out, const char *text, size_t len, char *why, size_t whylen);

/* Most parts ev_verdict_parse_parts reads. */
#define EV_VERDICT_PARTS_MAX 8

/*
 * A combined answer: one object holding a verdict per question, e.g.
 * {"theme": {...}, "pdf": {...}}. `names` (count <= EV_VERDICT_PARTS_MAX)
 * are the members asked for. The outer object is found and checked like a
 * single verdict (fence, prose, truncation, repeated members); each named
 * member's object is then parsed from its own bytes by ev_verdict_parse, so
 * every rule of a single verdict holds for each part. out[i] is filled and
 * bit i set in *got for each part that is a verdict. Returns 0 when at
 * least one part is, else EV_EPARSE with `why` (may be NULL).
 */
int ev_verdict_parse_parts(ev_verdict_t *out, unsigned *got, const char *text, size_t len,
                           const char *const *names, size_t count, char *why, size_t whylen);

/* Finds the first balanced {...} in text (string-aware). Returns 0 with
 * *start and *olen set, or EV_EPARSE when none is complete. Exposed for fuzzing. */
int ev_verdict_find_object(const char *text, size_t len, size_t *start, size_t *olen);

#endif
