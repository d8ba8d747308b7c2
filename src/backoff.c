/*
 * backoff.c - exponential backoff with full jitter, floored by the server's
 * suggested delay (formulas in backoff.h).
 *
 * Threads: any; there is no shared state here (the random source is the
 * caller's; the default ev_rand01 is per-thread). No locks.
 */
#include "ev/backoff.h"

#include "ev/error.h"
#include "ev/util.h"

#include <math.h>

int ev_backoff_options_check(const ev_backoff_options_t *o)
{
    if (o == NULL || o->base_ms < 1 || o->max_ms < o->base_ms || o->hint_jitter_ms < 0)
        return EV_EINVAL;
    return 0;
}

int64_t ev_backoff_ceiling_ms(const ev_backoff_options_t *o, int attempt)
{
    int64_t c = o->base_ms;

    if (attempt < 0)
        attempt = 0;
    /* Double step by step so nothing overflows; stop at the cap. */
    for (int i = 0; i < attempt && c < o->max_ms; i++)
        c = c > INT64_MAX / 2 ? INT64_MAX : c * 2;
    return EV_MIN(c, o->max_ms);
}

static double draw(const ev_backoff_options_t *o)
{
    double u = o->rand01 ? o->rand01(o->rand_ctx) : ev_rand01();
    if (!(u >= 0) || u >= 1)
        u = 0; /* a broken source must not produce out-of-range delays */
    return u;
}

/* Uniform integer in [0, hi] from u in [0, 1). */
static int64_t uniform_upto(double u, int64_t hi)
{
    if (hi <= 0)
        return 0;
    int64_t v = (int64_t)floor(u * ((double)hi + 1.0));
    return EV_MIN(v, hi);
}

int64_t ev_backoff_delay_ms(const ev_backoff_options_t *o, int attempt, int64_t server_hint_ms)
{
    EV_ASSERT(ev_backoff_options_check(o) == 0);
    int64_t delay = uniform_upto(draw(o), ev_backoff_ceiling_ms(o, attempt));
    if (server_hint_ms > 0) {
        int64_t extra = uniform_upto(draw(o), EV_MIN(o->hint_jitter_ms, server_hint_ms));
        int64_t hinted = server_hint_ms > INT64_MAX - extra ? INT64_MAX : server_hint_ms + extra;
        delay = EV_MAX(delay, hinted);
    }
    return delay;
}

int ev_backoff_sleep(const ev_clock_t *clock, int64_t delay_ms, const atomic_bool *stop)
{
    int64_t end = ev_clock_now_us(clock) + EV_MAX(0, delay_ms) * 1000;

    for (;;) {
        if (stop != NULL && atomic_load(stop))
            return EV_ESHUTDOWN;
        int64_t now = ev_clock_now_us(clock);
        if (now >= end)
            return 0;
        ev_clock_sleep_us(clock, EV_MIN(end - now, (int64_t)EV_BACKOFF_SLEEP_STEP_US));
    }
}
