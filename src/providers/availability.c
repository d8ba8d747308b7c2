/*
 * providers/availability.c - the table of models set aside; see
 * availability.h.
 *
 * How: a small array of (provider, model, status, message) entries, only
 * ever appended to: a model once retired stays retired for the process.
 * Lookups compare names under the mutex; lists hold at most a few models per
 * provider, so a linear scan costs less than the HTTP call it precedes.
 *
 * Threads: `lock` guards `entries`, `n` and the subscribers; subscribers are
 * called after unlocking. Lock order: this lock is a leaf.
 */
#include "ev/availability.h"

#include "ev/error.h"
#include "ev/util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Every model of every list of every provider. */
#define MAX_ENTRIES (EV_PROVIDER_COUNT * 2 * EV_CONFIG_MAX_MODELS)

typedef struct entry {
    ev_provider_id_t provider;
    char *model;
    char *message;
    ev_model_status_t status;
} entry_t;

struct ev_availability {
    pthread_mutex_t lock;
    entry_t entries[MAX_ENTRIES]; /* guarded by lock */
    size_t n;                     /* guarded by lock */
    struct {
        ev_availability_change_fn fn;
        void *ctx;
    } subs[EV_AVAILABILITY_MAX_SUBSCRIBERS]; /* guarded by lock */
    size_t n_subs;                           /* guarded by lock */
};

int ev_availability_new(ev_availability_t **out)
{
    ev_availability_t *a = ev_calloc(1, sizeof(*a));
    EV_ASSERT(pthread_mutex_init(&a->lock, NULL) == 0);
    *out = a;
    return 0;
}

void ev_availability_free(ev_availability_t *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++) {
        free(a->entries[i].model);
        free(a->entries[i].message);
    }
    pthread_mutex_destroy(&a->lock);
    free(a);
}

/* Requires a->lock. */
static entry_t *find(ev_availability_t *a, ev_provider_id_t provider, const char *model)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->entries[i].provider == provider && strcmp(a->entries[i].model, model) == 0)
            return &a->entries[i];
    return NULL;
}

bool ev_availability_mark(ev_availability_t *a, ev_provider_id_t provider, const char *model,
                          ev_model_status_t status, const char *message)
{
    EV_ASSERT(status != EV_MODEL_AVAILABLE && status != EV_MODEL_UNCHECKED);
    bool changed = false;
    size_t n_subs = 0;
    ev_availability_change_fn fns[EV_AVAILABILITY_MAX_SUBSCRIBERS];
    void *ctxs[EV_AVAILABILITY_MAX_SUBSCRIBERS];
    pthread_mutex_lock(&a->lock);
    if (!find(a, provider, model) && a->n < MAX_ENTRIES) {
        entry_t *e = &a->entries[a->n++];
        e->provider = provider;
        e->model = ev_strdup(model);
        e->message = ev_strdup(message ? message : "");
        e->status = status;
        changed = true;
        n_subs = a->n_subs;
        for (size_t i = 0; i < n_subs; i++) {
            fns[i] = a->subs[i].fn;
            ctxs[i] = a->subs[i].ctx;
        }
    }
    pthread_mutex_unlock(&a->lock);
    /* Outside the lock: a subscriber logs, counts, or tells other replicas. */
    for (size_t i = 0; i < n_subs; i++)
        fns[i](ctxs[i], provider, model, status, message ? message : "");
    return changed;
}

ev_model_status_t ev_availability_status(ev_availability_t *a, ev_provider_id_t provider,
                                         const char *model)
{
    pthread_mutex_lock(&a->lock);
    entry_t *e = find(a, provider, model);
    ev_model_status_t st = e ? e->status : EV_MODEL_AVAILABLE;
    pthread_mutex_unlock(&a->lock);
    return st;
}

bool ev_availability_is_available(ev_availability_t *a, ev_provider_id_t provider,
                                  const char *model)
{
    return ev_availability_status(a, provider, model) == EV_MODEL_AVAILABLE;
}

size_t ev_availability_count(ev_availability_t *a, ev_provider_id_t provider)
{
    size_t n = 0;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n; i++)
        n += a->entries[i].provider == provider;
    pthread_mutex_unlock(&a->lock);
    return n;
}

int ev_availability_on_change(ev_availability_t *a, ev_availability_change_fn fn, void *ctx)
{
    int rc = 0;
    pthread_mutex_lock(&a->lock);
    if (a->n_subs < EV_AVAILABILITY_MAX_SUBSCRIBERS) {
        a->subs[a->n_subs].fn = fn;
        a->subs[a->n_subs].ctx = ctx;
        a->n_subs++;
    } else {
        rc = EV_ELIMIT;
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
}
