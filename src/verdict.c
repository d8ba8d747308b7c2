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
#include "ev/util.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Answers are small; anything longer is a runaway generation. */
#define MAX_OBJECT_BYTES (64 * 1024)

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

int ev_verdict_parse(ev_verdict_t *out, const char *text, size_t len, char *why, size_t whylen)
{
    int rc = EV_EPARSE;
    json_object *obj = NULL;
    json_tokener *tok = NULL;
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
    if (olen > MAX_OBJECT_BYTES) {
        set_why(why, whylen, "JSON object is too large");
        goto out;
    }
    tok = json_tokener_new();
    obj = json_tokener_parse_ex(tok, text + start, (int)olen);
    if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
        !json_object_is_type(obj, json_type_object)) {
        set_why(why, whylen, "answer is not valid JSON");
        goto out;
    }

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
    out->valid = json_object_get_boolean(v);
    out->score = score;
    const char *reason = json_object_get_string(r);
    size_t rlen = (size_t)json_object_get_string_len(r);
    if (rlen > EV_VERDICT_REASON_MAX) {
        rlen = EV_VERDICT_REASON_MAX;
        /* Do not cut a UTF-8 sequence in half. */
        while (rlen > 0 && ((unsigned char)reason[rlen] & 0xC0) == 0x80)
            rlen--;
    }
    memcpy(out->reason, reason, rlen);
    out->reason[rlen] = '\0';
    rc = 0;
out:
    json_object_put(obj);
    if (tok)
        json_tokener_free(tok);
    return rc;
}
