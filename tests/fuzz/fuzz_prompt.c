/*
 * fuzz_prompt.c - libFuzzer target for prompt building (include/ev/prompts.h).
 *
 * The input is split at 0xFF bytes into a title, a description and a PDF
 * text (all untrusted), and its first byte picks the check. Checked for any
 * input, for every check that quotes untrusted text:
 *   - exactly one line "<<<BEGIN SUBMISSION T", followed by one line of JSON
 *     and then "END SUBMISSION T>>>", where T is EV_PROMPT_TOKEN_LEN hex
 *     digits that occur nowhere else in the prompt;
 *   - everything before the frame and after it is exactly what the same
 *     event gives with empty untrusted fields: no input moves text outside
 *     the frame;
 *   - the JSON line parses to an object whose strings are the inputs (as
 *     clipped), so nothing was lost or added inside the frame either.
 * Single-threaded.
 */
#include "fuzz_common.h"

#include "ev/prompts.h"

#include <json-c/json.h>

/* Splits the prompt around its frame; false when the frame is not exactly
 * as promised. *head and *tail point into p; *json is a new string. */
static int frame_parts(const char *p, size_t *head_len, const char **tail, char **json)
{
    static const char begin[] = "\n<<<BEGIN SUBMISSION ";
    const char *b = strstr(p, begin);
    if (!b || strstr(b + 1, begin))
        return 0;
    const char *tok = b + sizeof(begin) - 1;
    const char *nl = strchr(tok, '\n');
    if (!nl || nl - tok != EV_PROMPT_TOKEN_LEN)
        return 0;
    for (const char *c = tok; c < nl; c++)
        if (!strchr("0123456789abcdef", *c))
            return 0;
    char t[EV_PROMPT_TOKEN_LEN + 1];
    memcpy(t, tok, EV_PROMPT_TOKEN_LEN);
    t[EV_PROMPT_TOKEN_LEN] = '\0';
    const char *line = nl + 1, *eol = strchr(line, '\n');
    if (!eol)
        return 0;
    char end[64];
    snprintf(end, sizeof(end), "\nEND SUBMISSION %s>>>\n", t);
    if (strncmp(eol, end, strlen(end)) != 0)
        return 0;
    /* The token occurs exactly twice: in the BEGIN and the END line. */
    int seen = 0;
    for (const char *c = p; (c = strstr(c, t)) != NULL; c++)
        seen++;
    if (seen != 2)
        return 0;
    *head_len = (size_t)(b - p);
    *tail = eol + strlen(end);
    *json = strndup(line, (size_t)(eol - line));
    return *json != NULL;
}

/* The JSON field `key` equals the clipped input (or the placeholder). */
static int field_is(json_object *o, const char *key, const char *input, size_t max,
                    const char *none)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return 0;
    char *want = ev_prompt_clip(input, max);
    int ok = strcmp(json_object_get_string(v), *want ? want : none) == 0;
    free(want);
    return ok;
}

static void check_one(ev_check_t check, const ev_prompt_input_t *in)
{
    ev_prompt_input_t empty = *in;
    empty.title = empty.description = empty.pdf_text = NULL;
    char *p = ev_prompt_user(check, in), *q = ev_prompt_user(check, &empty);
    size_t hp = 0, hq = 0;
    const char *tp = NULL, *tq = NULL;
    char *jp = NULL, *jq = NULL;
    FUZZ_CHECK(frame_parts(p, &hp, &tp, &jp));
    FUZZ_CHECK(frame_parts(q, &hq, &tq, &jq));
    FUZZ_CHECK(hp == hq && memcmp(p, q, hp) == 0);
    FUZZ_CHECK(strcmp(tp, tq) == 0);
    FUZZ_CHECK(strchr(jp, '\n') == NULL && strchr(jp, '\r') == NULL);

    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, jp, (int)strlen(jp));
    FUZZ_CHECK(o && json_tokener_get_error(tok) == json_tokener_success &&
               json_object_is_type(o, json_type_object));
    if (check == EV_CHECK_PDF) {
        FUZZ_CHECK(field_is(o, "document_text", in->pdf_text, EV_PROMPT_PDF_TEXT_MAX,
                            "(the document has no extractable text)"));
    } else {
        FUZZ_CHECK(field_is(o, "title", in->title, EV_PROMPT_TITLE_MAX, ""));
        FUZZ_CHECK(
            field_is(o, "description", in->description, EV_PROMPT_DESCRIPTION_MAX, "(none)"));
        if (check == EV_CHECK_THEME)
            FUZZ_CHECK(field_is(o, "document_excerpt", in->pdf_text,
                                EV_PROMPT_THEME_PDF_EXCERPT_MAX, "(no document)"));
    }
    json_object_put(o);
    json_tokener_free(tok);
    free(jp);
    free(jq);
    free(p);
    free(q);
}

static int fuzz_prompt(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    char *parts[3] = {NULL, NULL, NULL};
    char *cur = size ? s + 1 : s;
    for (int i = 0; i < 3; i++) {
        parts[i] = cur;
        char *ff = cur ? strchr(cur, '\xff') : NULL;
        if (ff) {
            *ff = '\0';
            cur = ff + 1;
        } else {
            cur = NULL;
        }
    }
    ev_prompt_input_t in = {.event_name = "Hack night",
                            .theme = "Rivers",
                            .rules = "Original work only.",
                            .title = parts[0],
                            .description = parts[1],
                            .pdf_text = parts[2],
                            .image_count = 2};
    ev_check_t checks[] = {EV_CHECK_THEME, EV_CHECK_PDF, EV_CHECK_IMAGE};
    ev_check_t c = checks[(size ? data[0] : 0) % 3];
    check_one(c, &in);
    free(s);
    return 0;
}

#ifndef EV_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_prompt(data, size);
}
#endif
