/*
 * threads.h - the one place where threads are created and signals handled.
 *
 * Every thread of the process (workers, heartbeat, stats server helpers, the
 * signal thread) is started with ev_thread_create(): it gets a name visible in
 * `top -H`/gdb and starts with SIGTERM, SIGINT, SIGHUP and SIGPIPE blocked, so
 * the only thread that ever receives a termination signal is the one waiting
 * for it (redis bio.c, libuv threadpool.c).
 *
 * Startup order in main: ev_signals_block_all() before any thread exists (so
 * library-created threads inherit the mask too), then ev_signals_start(),
 * which starts the signal thread. That thread sigwait()s for SIGTERM/SIGINT
 * and turns the first one into a process-wide shutdown request that any
 * thread can test (ev_shutdown_requested) or wait for (ev_shutdown_wait).
 * A second signal while shutdown is already under way exits at once
 * (_exit(130)): leases of in-flight work expire and are rescued, so nothing
 * is lost, and an operator pressing Ctrl-C twice gets what they expect.
 */
#ifndef EV_THREADS_H
#define EV_THREADS_H

#include <pthread.h>
#include <stdbool.h>

typedef struct ev_thread {
    pthread_t tid;
    char name[16]; /* Linux limit: 15 characters plus NUL. */
    bool started;  /* Set by ev_thread_create, cleared by ev_thread_join. */
} ev_thread_t;

/*
 * Starts `fn(arg)` on a new thread named `name` (truncated to 15 chars) with
 * the termination signals and SIGPIPE blocked, whatever the caller's mask.
 * Returns 0, or EV_ENOMEM/EV_EINVAL when pthread_create fails (t->started
 * stays false). Call from any thread.
 */
int ev_thread_create(ev_thread_t *t, const char *name, void *(*fn)(void *), void *arg);

/* Joins a thread started by ev_thread_create; a no-op for one that never
 * started. *ret (may be NULL) receives fn's return value. Returns 0. */
int ev_thread_join(ev_thread_t *t, void **ret);

/*
 * Blocks SIGTERM, SIGINT, SIGHUP and SIGPIPE in the calling thread and sets
 * SIGPIPE to SIG_IGN process-wide (a peer closing a socket must never kill
 * the service). Call from main before creating any thread. Returns 0 or
 * EV_EINVAL.
 */
int ev_signals_block_all(void);

/*
 * Starts the signal thread that waits for SIGTERM/SIGINT (requires
 * ev_signals_block_all() first). The first signal calls
 * ev_shutdown_request(signo). Returns 0, EV_EBUSY if already started, or the
 * error of ev_thread_create.
 */
int ev_signals_start(void);

/* Stops and joins the signal thread (no-op if not started). Call from the
 * thread that started it. */
void ev_signals_stop(void);

/*
 * Process-wide shutdown request. `reason` is the signal number that caused
 * it, or 0 for an internal reason (e.g. `serve --drain` finished). The first
 * request wins; later ones only wake waiters. Thread-safe; not
 * async-signal-safe (signals reach us through sigwait, never a handler).
 */
void ev_shutdown_request(int reason);
bool ev_shutdown_requested(void);
/* The reason given to the first request, 0 if none or internal. */
int ev_shutdown_reason(void);

/* Waits until shutdown is requested, up to timeout_ms (< 0: no limit).
 * Returns true when it was requested. Thread-safe. */
bool ev_shutdown_wait(int timeout_ms);

/* Clears the request (tests only; no thread may be waiting). */
void ev_shutdown_reset(void);

#endif
