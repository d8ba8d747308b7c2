/*
 * budget.c - per-submission API call budget and call history.
 *
 * How: a counter compared with the limit under a lock, plus a fixed-capacity
 * array of history entries (strings copied at record time). JSON is built
 * from a copy taken under the lock, so json-c is never called while holding
 * it.
 *
 * Threads: normally one worker thread per budget; thread-safe regardless.
 *
 * Locking: one lock, `mu`, guards every mutable field. It is a leaf: the
 * clock is read before taking it and nothing else is called while it is
 * held except malloc/free.
 */
#include "ev/budget.h"

#include "ev/error.h"
#include "ev/util.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *check;
    char *provider;
    char *outcome;
    int http_status;
    int64_t latency_ms;
    int64_t t_ms;
} entry_t;

struct ev_budget {
    const ev_clock_t *clock; /* immutable */
    int limit;               /* immutable */

    pthread_mutex_t mu;
    /* Guarded by mu. */
    int used;
    int refusals;
    int dropped;
    int64_t start_us; /* creation or last reset */
    int64_t event_id;
    entry_t *hist; /* EV_BUDGET_MAX_HISTORY slots, allocated lazily */
    int nhist;
};

int ev_budget_new(ev_budget_t **out, int limit, const ev_clock_t *clock)
{
    int rc = 0;
    ev_budget_t *b = NULL;

    *out = NULL;
    if (limit < 0 || clock == NULL) {
        rc = EV_EINVAL;
        goto out;
    }
    b = ev_calloc(1, sizeof(*b));
    b->clock = clock;
    b->limit = limit;
    b->start_us = ev_clock_now_us(clock);
    EV_ASSERT(pthread_mutex_init(&b->mu, NULL) == 0);
    *out = b;
out:
    return rc;
}

static void entry_free(entry_t *e)
{
    free(e->check);
    free(e->provider);
    free(e->outcome);
}

/* Requires mu. */
static void clear_history(ev_budget_t *b)
{
    for (int i = 0; i < b->nhist; i++)
        entry_free(&b->hist[i]);
    b->nhist = 0;
    b->dropped = 0;
}

void ev_budget_free(ev_budget_t *b)
{
    if (b == NULL)
        return;
    clear_history(b);
    free(b->hist);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void ev_budget_reset(ev_budget_t *b)
{
    int64_t now = ev_clock_now_us(b->clock);

    pthread_mutex_lock(&b->mu);
    b->used = 0;
    b->refusals = 0;
    b->start_us = now;
    clear_history(b);
    pthread_mutex_unlock(&b->mu);
}

void ev_budget_set_event(ev_budget_t *b, int64_t event_id)
{
    pthread_mutex_lock(&b->mu);
    b->event_id = event_id;
    pthread_mutex_unlock(&b->mu);
}

int64_t ev_budget_event(ev_budget_t *b)
{
    pthread_mutex_lock(&b->mu);
    int64_t id = b->event_id;
    pthread_mutex_unlock(&b->mu);
    return id;
}

int ev_budget_take(ev_budget_t *b)
{
    int rc = 0;

    pthread_mutex_lock(&b->mu);
    if (b->used < b->limit) {
        b->used++;
    } else {
        b->refusals++;
        rc = EV_EBUDGET;
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void ev_budget_give_back(ev_budget_t *b)
{
    pthread_mutex_lock(&b->mu);
    EV_ASSERT(b->used > 0);
    b->used--;
    pthread_mutex_unlock(&b->mu);
}

int ev_budget_used(ev_budget_t *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->used;
    pthread_mutex_unlock(&b->mu);
    return n;
}

int ev_budget_limit(const ev_budget_t *b)
{
    return b->limit;
}

int ev_budget_remaining(ev_budget_t *b)
{
    return b->limit - ev_budget_used(b);
}

int ev_budget_refusals(ev_budget_t *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->refusals;
    pthread_mutex_unlock(&b->mu);
    return n;
}

int ev_budget_record(ev_budget_t *b, const char *check, const char *provider, const char *outcome,
                     int http_status, int64_t latency_ms)
{
    int rc = 0;
    int64_t now = ev_clock_now_us(b->clock);

    if (check == NULL || provider == NULL || outcome == NULL) {
        rc = EV_EINVAL;
        goto out;
    }
    pthread_mutex_lock(&b->mu);
    if (b->nhist >= EV_BUDGET_MAX_HISTORY) {
        b->dropped++;
        rc = EV_ELIMIT;
    } else {
        if (b->hist == NULL)
            b->hist = ev_calloc(EV_BUDGET_MAX_HISTORY, sizeof(entry_t));
        b->hist[b->nhist++] = (entry_t){
            .check = ev_strdup(check),
            .provider = ev_strdup(provider),
            .outcome = ev_strdup(outcome),
            .http_status = http_status,
            .latency_ms = latency_ms < 0 ? 0 : latency_ms,
            .t_ms = (now - b->start_us) / 1000,
        };
    }
    pthread_mutex_unlock(&b->mu);
out:
    return rc;
}

int ev_budget_history_count(ev_budget_t *b, const char *check)
{
    int n = 0;

    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < b->nhist; i++)
        if (check == NULL || strcmp(b->hist[i].check, check) == 0)
            n++;
    pthread_mutex_unlock(&b->mu);
    return n;
}

int ev_budget_history_dropped(ev_budget_t *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->dropped;
    pthread_mutex_unlock(&b->mu);
    return n;
}

struct json_object *ev_budget_history_json(ev_budget_t *b, const char *check)
{
    entry_t *copy = NULL;
    int *seq = NULL;
    int n = 0;
    json_object *arr = json_object_new_array();

    EV_ASSERT(arr != NULL);
    /* Copy the matching entries under the lock; build JSON without it. */
    pthread_mutex_lock(&b->mu);
    if (b->nhist > 0) {
        copy = ev_calloc((size_t)b->nhist, sizeof(entry_t));
        seq = ev_calloc((size_t)b->nhist, sizeof(int));
    }
    for (int i = 0; i < b->nhist; i++) {
        const entry_t *e = &b->hist[i];
        if (check != NULL && strcmp(e->check, check) != 0)
            continue;
        copy[n] = *e;
        copy[n].check = ev_strdup(e->check);
        copy[n].provider = ev_strdup(e->provider);
        copy[n].outcome = ev_strdup(e->outcome);
        seq[n] = i + 1;
        n++;
    }
    pthread_mutex_unlock(&b->mu);

    for (int i = 0; i < n; i++) {
        const entry_t *e = &copy[i];
        json_object *o = json_object_new_object();
        EV_ASSERT(o != NULL);
        json_object_object_add(o, "seq", json_object_new_int(seq[i]));
        if (check == NULL)
            json_object_object_add(o, "check", json_object_new_string(e->check));
        json_object_object_add(o, "provider", json_object_new_string(e->provider));
        json_object_object_add(o, "outcome", json_object_new_string(e->outcome));
        json_object_object_add(o, "http_status",
                               e->http_status > 0 ? json_object_new_int(e->http_status) : NULL);
        json_object_object_add(o, "latency_ms", json_object_new_int64(e->latency_ms));
        json_object_object_add(o, "t_ms", json_object_new_int64(e->t_ms));
        EV_ASSERT(json_object_array_add(arr, o) == 0);
        entry_free(&copy[i]);
    }
    free(copy);
    free(seq);
    return arr;
}
