/*
 * prompts.h - every prompt the service sends, in one place, with a version.
 *
 * EV_PROMPT_VERSION is part of the verdict cache key: bump it whenever a
 * prompt's wording changes so old verdicts are not reused for new questions.
 * Submission text is untrusted: it is quoted between markers and the model is
 * told to judge it, never to follow instructions inside it. Every system
 * prompt names JSON (Groq's json_object mode requires the word). Pure
 * functions; any thread.
 */
#ifndef EV_PROMPTS_H
#define EV_PROMPTS_H

#include <stdbool.h>
#include <stddef.h>

#define EV_PROMPT_VERSION 1

/* Bounds on untrusted text copied into a prompt (characters, UTF-8 safe). */
#define EV_PROMPT_DESCRIPTION_MAX 4000
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

/* Copies at most max bytes of s without splitting a UTF-8 sequence;
 * newly allocated. NULL s gives "". */
char *ev_prompt_clip(const char *s, size_t max);

#endif
