/*
 * httpguard.h - an absolute deadline for every connection of a
 * libmicrohttpd server, so slow clients cannot hold its slots.
 *
 * libmicrohttpd's connection timeout is an idle timeout: a client that sends
 * one header line every few seconds is never idle long enough, and 130 such
 * clients fill every slot, so /livez stops answering and an orchestrator
 * restarts a healthy service. The guard records when each connection
 * started (MHD_OPTION_NOTIFY_CONNECTION) and a thread of its own shuts down
 * every connection older than the deadline; libmicrohttpd then sees the
 * socket end and frees the slot. Our responses take milliseconds, so a
 * deadline of seconds cuts only clients that are slow on purpose (a
 * keep-alive scraper simply reconnects).
 *
 * Threads: the notify callback runs on libmicrohttpd's threads, the sweep on
 * the guard's thread ("ev-http-guard"); `lock` guards the list of
 * connections. A socket is shut down only while its connection is on the
 * list, under the lock that the close notification also takes, and
 * libmicrohttpd closes a socket only after that notification, so the guard
 * never touches a descriptor that was reused. Never logs.
 */
#ifndef EV_HTTPGUARD_H
#define EV_HTTPGUARD_H

#include <microhttpd.h>
#include <stdint.h>

typedef struct ev_httpguard ev_httpguard_t;

/* Starts the guard's thread. Returns 0, or EV_EIO when it cannot start. */
int ev_httpguard_new(ev_httpguard_t **out, int deadline_ms);
/* Stops the thread and frees; call after MHD_stop_daemon. Accepts NULL. */
void ev_httpguard_free(ev_httpguard_t *g);

/* Pass as MHD_OPTION_NOTIFY_CONNECTION, ev_httpguard_notify, guard. */
void ev_httpguard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                         enum MHD_ConnectionNotificationCode code);

/* Connections cut for outliving the deadline since the start. */
uint64_t ev_httpguard_cut(const ev_httpguard_t *g);

#endif
