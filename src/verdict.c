/*
 * verdict.c - defensive parsing of the model's {"valid","score","reason"}.
 *
 * Order of work (PROVIDERS.md failure mode 5): skip a ``` fence that wraps the
 * whole text, scan for the first balanced object honouring JSON strings and
 * escapes (so a brace inside a reason does not end it early), parse only that
 * object with json-c, then check each field's type and range. Nothing here
 * allocates beyond json-c's parse of one bounded object; no logging.
 */
#include "ev/verdict.h"

#include "ev/error.h"
#include "ev/utf8.h"
#include "ev/util.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Answers are small; anything longer is a runaway generation. */
#define MAX_OBJECT_BYTES (64 * 1024)
/* Fields an answer may have; it is asked for three. */
#define MAX_KEYS 32

static void set_why(char *why, size_t whylen, const char *msg)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", msg);
}

int ev_verdict_find_object(const char *text, size_t len, size_t *start, size_t *olen)
{
    size_t i = 0;
    while (i < len && text[i] != '{')
        i++;
    if (i == len)
        return EV_EPARSE;
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t j = i; j < len; j++) {
        char c = text[j];
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"')
            in_str = true;
        else if (c == '{')
            depth++;
        else if (c == '}' && --depth == 0) {
            *start = i;
            *olen = j - i + 1;
            return 0;
        }
    }
    return EV_EPARSE;
}

/* A JSON string literal (quotes included) decoded by json-c; NULL if invalid. */
static json_object *decode_key(const char *lit, size_t n)
{
    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, lit, (int)n);
    if (o && (json_tokener_get_error(tok) != json_tokener_success ||
              !json_object_is_type(o, json_type_string))) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

/*
 * A walk over the bytes of a well-formed JSON object (json-c parsed it) that
 * finds its top-level keys: feed it each byte in turn with key_scan_step.
 */
typedef struct key_scan {
    int depth;
    bool in_str, esc, expect_key;
    size_t key_start; /* 1 + offset of a top-level key's first byte, or 0 */
} key_scan_t;

/* Feeds obj[i]. True when obj[i] ends a top-level key: its literal (quotes
 * included) is obj[*at .. *at + *n). */
static bool key_scan_step(key_scan_t *s, const char *obj, size_t i, size_t *at, size_t *n)
{
    char c = obj[i];
    bool key = false;
    if (s->in_str) {
        if (s->esc) {
            s->esc = false;
        } else if (c == '\\') {
            s->esc = true;
        } else if (c == '"') {
            s->in_str = false;
            if (s->key_start) {
                *at = s->key_start - 1;
                *n = i - s->key_start + 2;
                key = true;
                s->key_start = 0;
            }
        }
    } else if (c == '"') {
        s->in_str = true;
        if (s->depth == 1 && s->expect_key) {
            s->key_start = i + 1;
            s->expect_key = false;
        }
    } else if (c == '{' || c == '[') {
        s->depth++;
        s->expect_key = s->depth == 1;
    } else if (c == '}' || c == ']') {
        s->depth--;
    } else if (c == ',' && s->depth == 1) {
        s->expect_key = true;
    }
    return key;
}

/*
 * True when the object (already parsed by json-c, so well formed) repeats a
 * top-level key, compared after decoding escapes ("valid" and "\u0076alid"
 * are the same key), or has more than MAX_KEYS of them. json-c keeps the last
 * of duplicates; an answer that says both false and true is ambiguous.
 */
static bool ambiguous_keys(const char *obj, size_t len)
{
    json_object *keys[MAX_KEYS];
    key_scan_t scan = {0};
    int nkeys = 0;
    bool dup = false;
    size_t at = 0, n = 0;
    for (size_t i = 0; i < len && !dup; i++) {
        if (!key_scan_step(&scan, obj, i, &at, &n))
            continue;
        json_object *k = decode_key(obj + at, n);
        for (int j = 0; k && j < nkeys && !dup; j++)
            dup = strcmp(json_object_get_string(keys[j]), json_object_get_string(k)) == 0;
        if (!k || nkeys == MAX_KEYS) {
            dup = true;
            json_object_put(k);
        } else {
            keys[nkeys++] = k;
        }
    }
    for (int j = 0; j < nkeys; j++)
        json_object_put(keys[j]);
    return dup;
}

/* Skips a terminal escape sequence starting at s[i] (ESC or CSI); returns the index after it. */
static size_t skip_escape(const unsigned char *s, size_t n, size_t i, bool csi)
{
    if (!csi) {
        if (i + 1 >= n)
            return n;
        if (s[i + 1] == ']') { /* OSC: up to BEL or ESC \ */
            for (size_t j = i + 2; j < n; j++) {
                if (s[j] == 0x07)
                    return j + 1;
                if (s[j] == 0x1b)
                    return j + 2 <= n ? j + 2 : n;
            }
            return n;
        }
        if (s[i + 1] != '[')
            return i + 2; /* a two-character escape */
        i += 2;
    } else {
        i += 2; /* U+009B is two bytes in UTF-8 */
    }
    while (i < n && !(s[i] >= 0x40 && s[i] <= 0x7e))
        i++;
    return i < n ? i + 1 : n;
}

/* Invisible characters that reorder or hide text on a screen. */
static bool is_bidi_or_invisible(uint32_t cp)
{
    return (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x202a && cp <= 0x202e) ||
           (cp >= 0x2066 && cp <= 0x2069) || cp == 0xfeff;
}

/*
 * The reason as it may be stored and shown: terminal escape sequences and
 * bidirectional or invisible controls removed, other control characters and
 * line breaks as one space, invalid UTF-8 as U+FFFD, spaces collapsed and
 * trimmed, at most EV_VERDICT_REASON_MAX bytes without splitting a
 * character. Writes into out (EV_VERDICT_REASON_MAX + 1 bytes).
 */
static void clean_reason(char *out, const char *in, size_t n)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0, i = 0;
    bool space = false;
    while (i < n) {
        uint32_t cp;
        size_t l = ev_utf8_decode_lossy(s + i, n - i, &cp);
        if (cp == 0x1b || cp == 0x9b) {
            i = skip_escape(s, n, i, cp == 0x9b);
            continue;
        }
        i += l;
        if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0) || cp == ' ' || cp == 0x2028 ||
            cp == 0x2029) {
            space = cp != 0x7f && !(cp >= 0x80 && cp < 0xa0) ? true : space;
            continue;
        }
        if (is_bidi_or_invisible(cp))
            continue;
        char enc[4];
        size_t el = ev_utf8_encode(cp, enc);
        size_t need = el + (space && o > 0 ? 1 : 0);
        if (o + need > EV_VERDICT_REASON_MAX)
            break;
        if (space && o > 0)
            out[o++] = ' ';
        memcpy(out + o, enc, el);
        o += el;
        space = false;
    }
    out[o] = '\0';
}

/*
 * Parses the object text[0..len) that ev_verdict_find_object found: at most
 * MAX_OBJECT_BYTES, valid JSON, an object, and no key twice (`repeated` is
 * the reason then). Returns 0 with *objp (the caller puts it), or EV_EPARSE
 * with *objp NULL and the reason in why.
 */
static int parse_object(json_object **objp, const char *text, size_t len, const char *repeated,
                        char *why, size_t whylen)
{
    int rc = EV_EPARSE;
    json_tokener *tok = NULL;
    json_object *obj = NULL;

    if (len > MAX_OBJECT_BYTES) {
        set_why(why, whylen, "JSON object is too large");
        goto out;
    }
    tok = json_tokener_new();
    obj = json_tokener_parse_ex(tok, text, (int)len);
    if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
        !json_object_is_type(obj, json_type_object)) {
        set_why(why, whylen, "answer is not valid JSON");
        goto out;
    }
    if (ambiguous_keys(text, len)) {
        set_why(why, whylen, repeated);
        goto out;
    }
    rc = 0;
out:
    if (rc != 0) {
        json_object_put(obj);
        obj = NULL;
    }
    if (tok)
        json_tokener_free(tok);
    *objp = obj;
    return rc;
}

int ev_verdict_parse(ev_verdict_t *out, const char *text, size_t len, char *why, size_t whylen)
{
    int rc = EV_EPARSE;
    json_object *obj = NULL;
    size_t start = 0, olen = 0;

    memset(out, 0, sizeof(*out));
    if (!text || len == 0) {
        set_why(why, whylen, "empty answer");
        goto out;
    }
    /* A fence wrapping everything is skipped by the object scan below, which
     * starts at the first '{' and stops at its balanced end; prose before or
     * after the object is ignored the same way. */
    if (ev_verdict_find_object(text, len, &start, &olen) < 0) {
        set_why(why, whylen,
                memchr(text, '{', len) ? "JSON object is truncated" : "no JSON object in answer");
        goto out;
    }
    if (parse_object(&obj, text + start, olen, "answer repeats a field (ambiguous)", why, whylen) !=
        0)
        goto out;

    json_object *v = NULL, *s = NULL, *r = NULL;
    if (!json_object_object_get_ex(obj, "valid", &v) ||
        !json_object_is_type(v, json_type_boolean)) {
        set_why(why, whylen, "field 'valid' is missing or not a boolean");
        goto out;
    }
    if (!json_object_object_get_ex(obj, "score", &s) ||
        !(json_object_is_type(s, json_type_double) || json_object_is_type(s, json_type_int))) {
        set_why(why, whylen, "field 'score' is missing or not a number");
        goto out;
    }
    double score = json_object_get_double(s);
    if (!isfinite(score) || score < 0.0 || score > 1.0) {
        set_why(why, whylen, "field 'score' is outside 0..1");
        goto out;
    }
    /* The reason is used as a C string: one starting with an escaped NUL
     * ("\u0000") is as empty as "". */
    if (!json_object_object_get_ex(obj, "reason", &r) ||
        !json_object_is_type(r, json_type_string) || json_object_get_string(r)[0] == '\0') {
        set_why(why, whylen, "field 'reason' is missing, empty or not a string");
        goto out;
    }
    clean_reason(out->reason, json_object_get_string(r), (size_t)json_object_get_string_len(r));
    if (out->reason[0] == '\0') {
        set_why(why, whylen, "field 'reason' has no printable text");
        goto out;
    }
    out->valid = json_object_get_boolean(v);
    out->score = score;
    rc = 0;
out:
    json_object_put(obj);
    return rc;
}

/* Index of the name that the JSON string literal lit[0..n) decodes to, or
 * -1. */
static int part_index(const char *lit, size_t n, const char *const *names, size_t count)
{
    json_object *k = decode_key(lit, n);
    int idx = -1;
    for (size_t j = 0; k && j < count && idx < 0; j++)
        if (strcmp(json_object_get_string(k), names[j]) == 0)
            idx = (int)j;
    json_object_put(k);
    return idx;
}

/*
 * Walks the top-level members of the object obj[0..len) (well formed: json-c
 * parsed it) and parses each member named in `names` whose value is an
 * object, from its own bytes, with ev_verdict_parse. Returns the set of
 * parts that are verdicts.
 */
static unsigned parse_members(ev_verdict_t *out, const char *obj, size_t len,
                              const char *const *names, size_t count)
{
    unsigned got = 0;
    int idx = -1;
    key_scan_t scan = {0};
    size_t at = 0, n = 0;
    for (size_t i = 0; i < len; i++) {
        if (!scan.in_str && obj[i] == '{' && scan.depth == 1 && idx >= 0) {
            /* The value of a named member: parse its own bytes, then skip them. */
            size_t start = 0, olen = 0;
            if (ev_verdict_find_object(obj + i, len - i, &start, &olen) < 0)
                break;
            if (ev_verdict_parse(&out[idx], obj + i, olen, NULL, 0) == 0)
                got |= 1u << idx;
            i += olen - 1;
            idx = -1;
        } else if (key_scan_step(&scan, obj, i, &at, &n)) {
            idx = part_index(obj + at, n, names, count);
        } else if (!scan.in_str && obj[i] == ',' && scan.depth == 1) {
            idx = -1;
        }
    }
    return got;
}

int ev_verdict_parse_parts(ev_verdict_t *out, unsigned *got, const char *text, size_t len,
                           const char *const *names, size_t count, char *why, size_t whylen)
{
    int rc = EV_EPARSE;
    json_object *obj = NULL;
    size_t start = 0, olen = 0;

    *got = 0;
    EV_ASSERT(count <= EV_VERDICT_PARTS_MAX);
    for (size_t j = 0; j < count; j++)
        memset(&out[j], 0, sizeof(out[j]));
    if (!text || len == 0 || ev_verdict_find_object(text, len, &start, &olen) < 0) {
        set_why(why, whylen, "no complete JSON object in answer");
        goto out;
    }
    if (parse_object(&obj, text + start, olen, "answer repeats a part (ambiguous)", why, whylen) !=
        0)
        goto out;
    *got = parse_members(out, text + start, olen, names, count);
    if (*got == 0) {
        set_why(why, whylen, "no part of the answer is a verdict");
        goto out;
    }
    rc = 0;
out:
    json_object_put(obj);
    return rc;
}
