/*
 * providers/preflight.c - the model lookups of `providers check` and of
 * serve's start; see preflight.h.
 *
 * How: walk the chain, one row per distinct model of a provider (a model in
 * both of its lists serves every check), one GET per row through the
 * provider's table. Helper module: returns data, never logs.
 */
#include "ev/preflight.h"

#include "ev/availability.h"
#include "ev/providers.h"
#include "ev/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ev_preflight_check_name(int check)
{
    static const char *const names[EV_PREFLIGHT_CHECKS] = {"theme", "pdf", "image"};
    return check >= 0 && check < EV_PREFLIGHT_CHECKS ? names[check] : "?";
}

/* The row of (provider, model), added with `uses` if new. */
static ev_preflight_row_t *row_for(ev_preflight_t *pf, ev_provider_id_t id, const char *model,
                                   unsigned uses)
{
    for (size_t i = 0; i < pf->n; i++) {
        if (pf->rows[i].provider == id && strcmp(pf->rows[i].model, model) == 0) {
            pf->rows[i].uses |= uses;
            return NULL;
        }
    }
    if (pf->n == EV_PREFLIGHT_MAX_ROWS)
        return NULL;
    ev_preflight_row_t *r = &pf->rows[pf->n++];
    memset(r, 0, sizeof(*r));
    r->provider = id;
    r->model = model;
    r->uses = uses;
    r->status = EV_MODEL_UNCHECKED;
    return r;
}

/* Adds the rows of one provider's configured lists. */
static void add_rows(ev_preflight_t *pf, const ev_provider_ops_t *ops,
                     const ev_provider_config_t *pc)
{
    bool images = ops->caps & EV_PROVIDER_CAP_IMAGES;
    bool own_vision = ops->caps & EV_PROVIDER_CAP_VISION_MODELS;
    for (size_t m = 0; m < pc->n_models; m++)
        row_for(pf, ops->id, pc->models[m],
                EV_PREFLIGHT_TEXT | (images && !own_vision ? EV_PREFLIGHT_IMAGE : 0));
    for (size_t m = 0; images && own_vision && m < pc->n_vision_models; m++)
        row_for(pf, ops->id, pc->vision_models[m], EV_PREFLIGHT_IMAGE);
}

int ev_preflight_run(ev_preflight_t *out, const ev_config_t *cfg, ev_http_t *http, int timeout_ms)
{
    memset(out, 0, sizeof(*out));
    for (int c = 0; c < EV_PREFLIGHT_CHECKS; c++)
        out->answer[c] = -1;
    for (int k = 0; k < cfg->n_provider_order; k++) {
        const ev_provider_config_t *pc = &cfg->providers[cfg->provider_order[k]];
        const ev_provider_ops_t *ops = ev_providers_get(cfg->provider_order[k]);
        if (!pc->api_key)
            continue;
        size_t first = out->n;
        add_rows(out, ops, pc);
        bool key_rejected = false;
        for (size_t i = first; i < out->n; i++) {
            ev_preflight_row_t *r = &out->rows[i];
            if (key_rejected) {
                r->status = EV_MODEL_KEY_REJECTED;
                snprintf(r->message, sizeof(r->message), "not asked: the key was rejected");
                continue;
            }
            r->status = ev_provider_check_model(ops, pc, http, timeout_ms, r->model, r->message,
                                                sizeof(r->message));
            key_rejected = r->status == EV_MODEL_KEY_REJECTED;
        }
    }
    for (size_t i = 0; i < out->n; i++) {
        const ev_preflight_row_t *r = &out->rows[i];
        if (r->status != EV_MODEL_AVAILABLE)
            continue;
        if ((r->uses & EV_PREFLIGHT_TEXT) && out->answer[EV_PREFLIGHT_THEME] < 0) {
            /* Every provider answers the PDF check: inline, or from its text. */
            out->answer[EV_PREFLIGHT_THEME] = (int)i;
            out->answer[EV_PREFLIGHT_PDF] = (int)i;
        }
        if ((r->uses & EV_PREFLIGHT_IMAGE) && out->answer[EV_PREFLIGHT_IMAGES] < 0)
            out->answer[EV_PREFLIGHT_IMAGES] = (int)i;
    }
    return 0;
}

bool ev_preflight_ok(const ev_preflight_t *pf)
{
    for (int c = 0; c < EV_PREFLIGHT_CHECKS; c++)
        if (pf->answer[c] < 0)
            return false;
    return true;
}

static const char *uses_name(unsigned uses)
{
    if (uses == (EV_PREFLIGHT_TEXT | EV_PREFLIGHT_IMAGE))
        return "theme,pdf,image";
    return uses == EV_PREFLIGHT_TEXT ? "theme,pdf" : "image";
}

char *ev_preflight_format(const ev_preflight_t *pf)
{
    size_t cap = 256 + (pf->n + EV_PREFLIGHT_CHECKS) * 320;
    char *out = ev_calloc(1, cap);
    size_t len = 0;
#define PUT(...) len += (size_t)snprintf(out + len, cap - len, __VA_ARGS__)
    PUT("%-14s %-34s %-16s %-13s %s\n", "PROVIDER", "MODEL", "CHECKS", "STATUS", "DETAIL");
    for (size_t i = 0; i < pf->n; i++) {
        const ev_preflight_row_t *r = &pf->rows[i];
        PUT("%-14s %-34.60s %-16s %-13s %s\n", ev_provider_name(r->provider), r->model,
            uses_name(r->uses), ev_model_status_name(r->status), r->message);
    }
    if (pf->n == 0)
        PUT("(no provider has a key)\n");
    PUT("\n");
    for (int c = 0; c < EV_PREFLIGHT_CHECKS; c++) {
        const ev_preflight_row_t *r = pf->answer[c] >= 0 ? &pf->rows[pf->answer[c]] : NULL;
        if (r)
            PUT("%-6s answered by %s %.60s\n", ev_preflight_check_name(c),
                ev_provider_name(r->provider), r->model);
        else
            PUT("%-6s NO configured model is known to answer it\n", ev_preflight_check_name(c));
    }
#undef PUT
    return out;
}

void ev_preflight_apply(const ev_preflight_t *pf, struct ev_availability *a)
{
    for (size_t i = 0; i < pf->n; i++) {
        const ev_preflight_row_t *r = &pf->rows[i];
        if (r->status == EV_MODEL_UNKNOWN || r->status == EV_MODEL_RETIRED ||
            r->status == EV_MODEL_UNUSABLE)
            ev_availability_mark(a, r->provider, r->model, r->status, r->message);
    }
}
