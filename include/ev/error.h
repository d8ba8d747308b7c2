/*
 * error.h - the one list of error codes used across event-validator.
 *
 * A fallible function returns int: 0 on success or a negative EV_E* code.
 * EV_ERRNO_MAP is the single source: it generates the enum, ev_strerror()
 * and ev_errname() (the libuv UV_ERRNO_MAP pattern). Add new codes only here.
 */
#ifndef EV_ERROR_H
#define EV_ERROR_H

#define EV_ERRNO_MAP(X)                                                                            \
    X(ENOMEM, 1, "out of memory")                                                                  \
    X(EINVAL, 2, "invalid argument or input")                                                      \
    X(ENOTFOUND, 3, "not found")                                                                   \
    X(ETOOBIG, 4, "too large")                                                                     \
    X(EIO, 5, "input/output error")                                                                \
    X(EDB, 6, "database error")                                                                    \
    X(EDBCONN, 7, "database unreachable")                                                          \
    X(ELEASE, 8, "lease lost")                                                                     \
    X(ERETRY, 9, "temporary failure, retry later")                                                 \
    X(EBUDGET, 10, "call budget exhausted")                                                        \
    X(EOPEN, 11, "circuit breaker open")                                                           \
    X(ETIMEOUT, 12, "timed out")                                                                   \
    X(EHTTP, 13, "HTTP transport error")                                                           \
    X(EPARSE, 14, "malformed data")                                                                \
    X(EFALLBACK, 15, "provider unusable now, fall back")                                           \
    X(ECONFIG, 16, "configuration error")                                                          \
    X(ESHUTDOWN, 17, "shutting down")                                                              \
    X(EUNAVAIL, 18, "no provider available")                                                       \
    X(EPATH, 19, "path refused")                                                                   \
    X(ETYPE, 20, "wrong file type")                                                                \
    X(EBUSY, 21, "busy")                                                                           \
    X(EEMPTY, 22, "nothing to do")                                                                 \
    X(EVERSION, 23, "unknown schema version")                                                      \
    X(EEXIST, 24, "already exists")                                                                \
    X(ELIMIT, 25, "limit exceeded")                                                                \
    X(EHELD, 26, "calls held by an operator or a spend limit")

typedef enum {
    EV_OK = 0,
#define EV_ERR_ENUM(name, num, msg) EV_##name = -(num),
    EV_ERRNO_MAP(EV_ERR_ENUM)
#undef EV_ERR_ENUM
} ev_err_t;

/* Human-readable description of an EV_E* code; never NULL, static storage. */
const char *ev_strerror(int err);
/* The code's symbolic name ("EV_ENOMEM"); never NULL, static storage. */
const char *ev_errname(int err);

#endif
