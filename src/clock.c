/*
 * clock.c - the real clock and the fake clock used by tests.
 * Any thread. The fake clock keeps its time in one _Atomic int64_t pair.
 */
#include "ev/clock.h"

#include "ev/error.h"
#include "ev/util.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

static int64_t ts_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t sys_now(void *ctx)
{
    (void)ctx;
    return ts_us(CLOCK_MONOTONIC);
}

static int64_t sys_wall(void *ctx)
{
    (void)ctx;
    return ts_us(CLOCK_REALTIME);
}

static void sys_sleep(void *ctx, int64_t us)
{
    (void)ctx;
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static const ev_clock_t system_clock = {sys_now, sys_wall, sys_sleep, NULL};

const ev_clock_t *ev_clock_system(void)
{
    return &system_clock;
}

struct ev_fake_clock {
    ev_clock_t clock;
    _Atomic int64_t now;
    int64_t wall_offset; /* immutable: wall = now + offset */
};

static int64_t fake_now(void *ctx)
{
    ev_fake_clock_t *fc = ctx;
    return atomic_load(&fc->now);
}

static int64_t fake_wall(void *ctx)
{
    ev_fake_clock_t *fc = ctx;
    return atomic_load(&fc->now) + fc->wall_offset;
}

static void fake_sleep(void *ctx, int64_t us)
{
    ev_fake_clock_advance(ctx, us);
}

int ev_fake_clock_new(ev_fake_clock_t **out, int64_t start_us, int64_t wall_start_us)
{
    ev_fake_clock_t *fc = ev_calloc(1, sizeof(*fc));
    fc->clock = (ev_clock_t){fake_now, fake_wall, fake_sleep, fc};
    atomic_store(&fc->now, start_us);
    fc->wall_offset = wall_start_us - start_us;
    *out = fc;
    return 0;
}

void ev_fake_clock_free(ev_fake_clock_t *fc)
{
    free(fc);
}

const ev_clock_t *ev_fake_clock_get(ev_fake_clock_t *fc)
{
    return &fc->clock;
}

void ev_fake_clock_advance(ev_fake_clock_t *fc, int64_t us)
{
    if (us > 0)
        atomic_fetch_add(&fc->now, us);
}

void ev_fake_clock_set(ev_fake_clock_t *fc, int64_t now_us)
{
    atomic_store(&fc->now, now_us);
}
