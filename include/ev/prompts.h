/*
 * prompts.h - every prompt the service sends, in one place, with a version.
 *
 * EV_PROMPT_VERSION is part of the verdict cache key: bump it whenever a
 * prompt's wording changes so old verdicts are not reused for new questions.
 * Submission text is untrusted: it is framed as one line of JSON between
 * BEGIN/END lines carrying a random per-request token, so no text can close
 * the frame, and the model is told to judge it, never to follow instructions
 * inside it. Every system prompt names JSON (Groq's json_object mode requires
 * the word). No shared state; any thread.
 */
#ifndef EV_PROMPTS_H
#define EV_PROMPTS_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#define EV_PROMPT_VERSION 2

/* Bounds on untrusted text copied into a prompt (characters, UTF-8 safe). */
#define EV_PROMPT_TITLE_MAX 500
#define EV_PROMPT_DESCRIPTION_MAX 4000
/* Hex digits of the frame's random token. */
#define EV_PROMPT_TOKEN_LEN 16
#define EV_PROMPT_THEME_PDF_EXCERPT_MAX 6000
#define EV_PROMPT_PDF_TEXT_MAX 12000

typedef enum {
    EV_CHECK_THEME = 0,
    EV_CHECK_PDF = 1,
    EV_CHECK_IMAGE = 2,
    EV_CHECK_COUNT = 3
} ev_check_t;

/* "theme" / "pdf" / "image" (the check_name column). */
const char *ev_check_name(ev_check_t check);

typedef struct ev_prompt_input {
    const char *event_name;
    const char *theme;
    const char *rules; /* may be NULL */
    const char *title;
    const char *description; /* may be NULL */
    const char *pdf_text;    /* extracted text, may be NULL */
    bool pdf_inline;         /* pdf check: the PDF itself is attached (Gemini) */
    int image_count;         /* image check: images attached */
} ev_prompt_input_t;

/* The system instruction for a check; static storage. */
const char *ev_prompt_system(ev_check_t check);

/* The user text for a check; newly allocated, caller frees. */
char *ev_prompt_user(ev_check_t check, const ev_prompt_input_t *in);

/*
 * "<head>\n<<<BEGIN SUBMISSION T\n<one-line JSON of submission>\nEND
 * SUBMISSION T>>>\n<tail>", T a fresh random token of EV_PROMPT_TOKEN_LEN hex
 * digits found nowhere in head or the JSON line. The JSON line contains no
 * line break (U+2028/U+2029 are escaped too). Borrows submission (the caller
 * still puts it); newly allocated result, caller frees. Exposed for the
 * fuzz target.
 */
char *ev_prompt_frame(const char *head, json_object *submission, const char *tail);

/* Bit of a check in a set of checks asked together. */
#define EV_CHECK_BIT(c) (1u << (unsigned)(c))

/*
 * Several checks asked in ONE call (CHECK_MODE=combined): `checks` is a set
 * of EV_CHECK_BIT()s. The system instruction gives each check's criteria and
 * asks for one json object with one verdict per check, keyed by
 * ev_check_name(); the user text states the event once, the questions, and
 * the submission once: the document either attached (in->pdf_inline) or as
 * its extracted text, so a provider gets the PDF a single time. Both newly
 * allocated; the caller frees.
 */
char *ev_prompt_combined_system(unsigned checks);
char *ev_prompt_combined_user(unsigned checks, const ev_prompt_input_t *in);

/* Copies at most max bytes of s without splitting a UTF-8 sequence;
 * newly allocated. NULL s gives "". */
char *ev_prompt_clip(const char *s, size_t max);

#endif
