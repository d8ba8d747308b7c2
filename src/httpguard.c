/*
 * httpguard.c - connection deadlines for libmicrohttpd (see httpguard.h).
 *
 * How: a doubly linked list of live connections, each with its socket and
 * start time (CLOCK_MONOTONIC: real time, as the clients' is). The guard's
 * thread wakes every SWEEP_MS and shutdown()s the sockets of connections
 * past the deadline; it keeps them on the list (libmicrohttpd removes them
 * through the close notification), marking them so each is cut once.
 *
 * Threads: see httpguard.h. Lock order: `lock` is a leaf; shutdown() is the
 * only call made while holding it (a non-blocking system call).
 */
#include "ev/httpguard.h"

#include "ev/error.h"
#include "ev/threads.h"
#include "ev/util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#define SWEEP_MS 200

typedef struct conn {
    struct conn *prev, *next;
    int fd;
    int64_t start_ms;
    bool cut;
} conn_t;

struct ev_httpguard {
    int deadline_ms; /* immutable */
    ev_thread_t thread;
    _Atomic uint64_t cut;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled on stop; waits use CLOCK_MONOTONIC */
    /* Guarded by lock. */
    conn_t head; /* sentinel of the list of live connections */
    bool stopping;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Caller holds lock. */
static void sweep_locked(ev_httpguard_t *g, int64_t now)
{
    for (conn_t *c = g->head.next; c != &g->head; c = c->next) {
        if (!c->cut && now - c->start_ms >= g->deadline_ms) {
            shutdown(c->fd, SHUT_RDWR);
            c->cut = true;
            atomic_fetch_add_explicit(&g->cut, 1, memory_order_relaxed);
        }
    }
}

static void *guard_main(void *arg)
{
    ev_httpguard_t *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)SWEEP_MS * 1000000;
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&g->cond, &g->lock, &ts);
        if (!g->stopping)
            sweep_locked(g, mono_ms());
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

int ev_httpguard_new(ev_httpguard_t **out, int deadline_ms)
{
    ev_httpguard_t *g = ev_calloc(1, sizeof(*g));
    g->deadline_ms = deadline_ms;
    g->head.next = g->head.prev = &g->head;
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cond, &ca);
    pthread_condattr_destroy(&ca);
    int rc = ev_thread_create(&g->thread, "ev-http-guard", guard_main, g);
    if (rc < 0) {
        ev_httpguard_free(g);
        g = NULL;
        rc = EV_EIO;
    }
    *out = g;
    return rc;
}

void ev_httpguard_free(ev_httpguard_t *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->lock);
    g->stopping = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    ev_thread_join(&g->thread, NULL);
    /* After MHD_stop_daemon every connection was closed and unlinked. */
    EV_ASSERT(g->head.next == &g->head);
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

void ev_httpguard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                         enum MHD_ConnectionNotificationCode code)
{
    ev_httpguard_t *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci)
            return;
        conn_t *n = ev_calloc(1, sizeof(*n));
        n->fd = ci->connect_fd;
        n->start_ms = mono_ms();
        pthread_mutex_lock(&g->lock);
        n->next = g->head.next;
        n->prev = &g->head;
        g->head.next->prev = n;
        g->head.next = n;
        pthread_mutex_unlock(&g->lock);
        *socket_context = n;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        conn_t *n = *socket_context;
        pthread_mutex_lock(&g->lock);
        n->prev->next = n->next;
        n->next->prev = n->prev;
        pthread_mutex_unlock(&g->lock);
        free(n);
        *socket_context = NULL;
    }
}

uint64_t ev_httpguard_cut(const ev_httpguard_t *g)
{
    return atomic_load_explicit(&((ev_httpguard_t *)g)->cut, memory_order_relaxed);
}
