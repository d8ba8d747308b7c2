/*
 * availability.h - which configured models a provider still answers with.
 *
 * A model the provider calls unknown, retired or unusable with our
 * configuration is marked unavailable once, for the whole process (one
 * failed call, never one per submission), and the router moves on to the
 * next model of the list. The state sits behind this small interface (mark,
 * ask, be told of a change) so that it can later be shared between replicas:
 * a coordinator subscribes with ev_availability_on_change() and replays
 * marks made elsewhere with ev_availability_mark().
 *
 * Threads: every function is thread-safe. One mutex guards the table; the
 * change callback runs on the marking thread after the lock is released.
 */
#ifndef EV_AVAILABILITY_H
#define EV_AVAILABILITY_H

#include "ev/config.h"
#include "ev/provider.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct ev_availability ev_availability_t;

/* Called once per model that becomes unavailable: provider, model, why, and
 * the provider's own words (never a key). Must not call back into `a`. */
typedef void (*ev_availability_change_fn)(void *ctx, ev_provider_id_t provider, const char *model,
                                          ev_model_status_t status, const char *message);

/* A table with every model available. Returns 0 (aborts on out-of-memory). */
int ev_availability_new(ev_availability_t **out);
void ev_availability_free(ev_availability_t *a);

/*
 * Marks `model` of `provider` unavailable with `status` (not
 * EV_MODEL_AVAILABLE or EV_MODEL_UNCHECKED) and the provider's message
 * (copied, may be NULL). Returns true when this call made the change (the
 * caller logs it), false when it was already marked or the table is full.
 */
bool ev_availability_mark(ev_availability_t *a, ev_provider_id_t provider, const char *model,
                          ev_model_status_t status, const char *message);

/* EV_MODEL_AVAILABLE, or why the model was marked. */
ev_model_status_t ev_availability_status(ev_availability_t *a, ev_provider_id_t provider,
                                         const char *model);

/* Shorthand: ev_availability_status() == EV_MODEL_AVAILABLE. */
bool ev_availability_is_available(ev_availability_t *a, ev_provider_id_t provider,
                                  const char *model);

/* Models of `provider` marked unavailable so far. */
size_t ev_availability_count(ev_availability_t *a, ev_provider_id_t provider);

/* Adds a change callback (at most EV_AVAILABILITY_MAX_SUBSCRIBERS; the router
 * takes one to log and count, a cluster coordinator may take another).
 * Returns 0 or EV_ELIMIT when full. */
#define EV_AVAILABILITY_MAX_SUBSCRIBERS 4
int ev_availability_on_change(ev_availability_t *a, ev_availability_change_fn fn, void *ctx);

#endif
