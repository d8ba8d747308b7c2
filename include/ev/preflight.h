/*
 * preflight.h - ask each provider about every configured model before
 * spending any generation quota.
 *
 * For each configured provider, in PROVIDER_ORDER, every model of its lists
 * is looked up at the provider's model-metadata endpoint (Gemini
 * GET {base}/models/{model}, Groq and OpenAI-compatible GET {base}/models).
 * The result is a table of (provider, model, which checks it serves, status)
 * and, for each check (theme, pdf, image), the first model in the chain that
 * is known to answer it. `providers check` prints the table; `serve` runs
 * the same at start and sets aside what the providers say is gone.
 *
 * Threads: runs on the caller's thread with the caller's ev_http_t; the
 * result is plain data.
 */
#ifndef EV_PREFLIGHT_H
#define EV_PREFLIGHT_H

#include "ev/config.h"
#include "ev/http.h"
#include "ev/provider.h"

#include <stdbool.h>
#include <stddef.h>

struct ev_availability;

/* What a model is configured for (bits). */
#define EV_PREFLIGHT_TEXT 0x1u  /* the theme and PDF checks */
#define EV_PREFLIGHT_IMAGE 0x2u /* the image check */

/* The three checks, in the order they are reported. */
enum { EV_PREFLIGHT_THEME = 0, EV_PREFLIGHT_PDF, EV_PREFLIGHT_IMAGES, EV_PREFLIGHT_CHECKS };

#define EV_PREFLIGHT_MAX_ROWS (EV_PROVIDER_COUNT * 2 * EV_CONFIG_MAX_MODELS)

typedef struct ev_preflight_row {
    ev_provider_id_t provider;
    const char *model; /* borrowed from the configuration */
    unsigned uses;     /* EV_PREFLIGHT_TEXT and/or EV_PREFLIGHT_IMAGE */
    ev_model_status_t status;
    char message[160]; /* the provider's words, never a key */
} ev_preflight_row_t;

typedef struct ev_preflight {
    ev_preflight_row_t rows[EV_PREFLIGHT_MAX_ROWS];
    size_t n;
    /* Per check: the first row in chain order known to answer it, or -1. */
    int answer[EV_PREFLIGHT_CHECKS];
} ev_preflight_t;

/* Runs the lookups (one GET per model, each bounded by timeout_ms; after a
 * rejected key the provider's other models are not asked). cfg must outlive
 * `out`. Returns 0 (the statuses say what went wrong). */
int ev_preflight_run(ev_preflight_t *out, const ev_config_t *cfg, ev_http_t *http, int timeout_ms);

/* True when every check has a model known to answer it. */
bool ev_preflight_ok(const ev_preflight_t *pf);

/* "theme", "pdf", "image". */
const char *ev_preflight_check_name(int check);

/* The table and the per-check summary as text (caller frees). */
char *ev_preflight_format(const ev_preflight_t *pf);

/* Sets aside in `a` every model found unknown, retired or unusable. */
void ev_preflight_apply(const ev_preflight_t *pf, struct ev_availability *a);

#endif
