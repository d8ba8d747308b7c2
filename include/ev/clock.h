/*
 * clock.h - injectable time source (redis monotonic.h idea).
 *
 * Every time-dependent module takes a `const ev_clock_t *` so tests can drive
 * time deterministically. ev_clock_system() is the real clock. A fake clock's
 * sleep advances its own time instead of blocking, so code that sleeps on a
 * fake clock runs instantly. All functions are thread-safe.
 */
#ifndef EV_CLOCK_H
#define EV_CLOCK_H

#include <stdint.h>

typedef struct ev_clock {
    /* Monotonic microseconds since an arbitrary origin. */
    int64_t (*now_us)(void *ctx);
    /* Wall-clock microseconds since the Unix epoch (for calendar decisions
     * such as "midnight Pacific"). */
    int64_t (*wall_us)(void *ctx);
    /* Block (or, for a fake clock, advance time) for `us` microseconds. */
    void (*sleep_us)(void *ctx, int64_t us);
    void *ctx;
} ev_clock_t;

/* The process-wide real clock (CLOCK_MONOTONIC / CLOCK_REALTIME); static. */
const ev_clock_t *ev_clock_system(void);

static inline int64_t ev_clock_now_us(const ev_clock_t *c)
{
    return c->now_us(c->ctx);
}
static inline int64_t ev_clock_now_ms(const ev_clock_t *c)
{
    return c->now_us(c->ctx) / 1000;
}
static inline int64_t ev_clock_wall_us(const ev_clock_t *c)
{
    return c->wall_us(c->ctx);
}
static inline void ev_clock_sleep_us(const ev_clock_t *c, int64_t us)
{
    if (us > 0)
        c->sleep_us(c->ctx, us);
}

/*
 * Fake clock for tests. Starts at `start_us` (monotonic) and wall time
 * `wall_start_us`. ev_fake_clock_advance() moves both forward; sleep_us on the
 * fake clock advances time by the requested amount (atomically) and returns.
 * Free with ev_fake_clock_free (accepts NULL).
 */
typedef struct ev_fake_clock ev_fake_clock_t;
int ev_fake_clock_new(ev_fake_clock_t **out, int64_t start_us, int64_t wall_start_us);
void ev_fake_clock_free(ev_fake_clock_t *fc);
const ev_clock_t *ev_fake_clock_get(ev_fake_clock_t *fc);
void ev_fake_clock_advance(ev_fake_clock_t *fc, int64_t us);
void ev_fake_clock_set(ev_fake_clock_t *fc, int64_t now_us);

#endif
