/*
 * log.c - JSON-lines logger.
 *
 * Each call formats the whole line into a stack/heap buffer and emits it with
 * a single write(2), so lines from different threads never interleave. The
 * level and fd are process-wide atomics set from main before threads start;
 * the context is _Thread_local and touched only by its own thread.
 */
#include "ev/log.h"

#include "ev/error.h"
#include "ev/util.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int min_level = EV_LOG_INFO;
static _Atomic int out_fd = 2;

static _Thread_local struct {
    int64_t submission;
    char check[16];
    char provider[16];
    int attempt;
    int worker;
} ctx = {0, "", "", -1, -1};

static const char *level_names[] = {"debug", "info", "warn", "error", "off"};

/* Which process wrote a line once several replicas log to one place. Set
 * from main before any thread starts (ev_log_set_replica), read-only after. */
static char replica_id[192];

void ev_log_set_replica(const char *id)
{
    snprintf(replica_id, sizeof(replica_id), "%s", id ? id : "");
}

void ev_log_set_level(ev_log_level_t level)
{
    atomic_store(&min_level, (int)level);
}
ev_log_level_t ev_log_get_level(void)
{
    return (ev_log_level_t)atomic_load(&min_level);
}
void ev_log_set_fd(int fd)
{
    atomic_store(&out_fd, fd);
}

int ev_log_parse_level(ev_log_level_t *out, const char *s)
{
    for (int i = 0; i <= EV_LOG_OFF; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (ev_log_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = EV_LOG_WARN;
        return 0;
    }
    return EV_EINVAL;
}

void ev_log_ctx_submission(int64_t id)
{
    ctx.submission = id;
}
void ev_log_ctx_attempt(int attempt)
{
    ctx.attempt = attempt;
}
void ev_log_ctx_worker(int worker)
{
    ctx.worker = worker;
}

static void set_str(char *dst, size_t n, const char *s)
{
    if (!s) {
        dst[0] = '\0';
        return;
    }
    snprintf(dst, n, "%s", s);
}

void ev_log_ctx_check(const char *check)
{
    set_str(ctx.check, sizeof(ctx.check), check);
}
void ev_log_ctx_provider(const char *p)
{
    set_str(ctx.provider, sizeof(ctx.provider), p);
}

void ev_log_ctx_clear(void)
{
    ctx.submission = 0;
    ctx.check[0] = ctx.provider[0] = '\0';
    ctx.attempt = ctx.worker = -1;
}

/* A growable line buffer; starts on the stack. */
typedef struct {
    char *p;
    size_t len, cap;
    char stack[1024];
} linebuf_t;

static void lb_init(linebuf_t *b)
{
    b->p = b->stack;
    b->len = 0;
    b->cap = sizeof(b->stack);
}

static void lb_reserve(linebuf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap * 2;
    while (cap < b->len + extra + 1)
        cap *= 2;
    if (b->p == b->stack) {
        b->p = ev_malloc(cap);
        memcpy(b->p, b->stack, b->len);
    } else {
        b->p = ev_realloc(b->p, cap);
    }
    b->cap = cap;
}

static void lb_raw(linebuf_t *b, const char *s, size_t n)
{
    lb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void lb_str(linebuf_t *b, const char *s)
{
    lb_raw(b, s, strlen(s));
}

/* Append s as the body of a JSON string (without quotes). */
static void lb_escaped(linebuf_t *b, const char *s)
{
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char tmp[8];
        switch (*c) {
        case '"':
            lb_raw(b, "\\\"", 2);
            break;
        case '\\':
            lb_raw(b, "\\\\", 2);
            break;
        case '\n':
            lb_raw(b, "\\n", 2);
            break;
        case '\r':
            lb_raw(b, "\\r", 2);
            break;
        case '\t':
            lb_raw(b, "\\t", 2);
            break;
        default:
            if (*c < 0x20) {
                snprintf(tmp, sizeof(tmp), "\\u%04x", *c);
                lb_str(b, tmp);
            } else {
                lb_raw(b, (const char *)c, 1);
            }
        }
    }
}

static void lb_field(linebuf_t *b, const char *key, const char *val)
{
    lb_str(b, ",\"");
    lb_str(b, key);
    lb_str(b, "\":\"");
    lb_escaped(b, val);
    lb_str(b, "\"");
}

static void lb_int_field(linebuf_t *b, const char *key, long long v)
{
    char tmp[64];
    snprintf(tmp, sizeof(tmp), ",\"%s\":%lld", key, v);
    lb_str(b, tmp);
}

static void begin_line(linebuf_t *b, ev_log_level_t level, const char *msg)
{
    struct timespec ts;
    struct tm tm;
    char tbuf[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + n, sizeof(tbuf) - n, ".%03ldZ", ts.tv_nsec / 1000000);
    lb_init(b);
    lb_str(b, "{\"ts\":\"");
    lb_str(b, tbuf);
    lb_str(b, "\",\"level\":\"");
    lb_str(b, level_names[level]);
    lb_str(b, "\",\"msg\":\"");
    lb_escaped(b, msg);
    lb_str(b, "\",\"service\":\"event-validator\",\"version\":\"" EV_VERSION "\"");
    if (replica_id[0])
        lb_field(b, "replica", replica_id);
    if (ctx.worker >= 0)
        lb_int_field(b, "worker", ctx.worker);
    if (ctx.submission > 0)
        lb_int_field(b, "submission_id", (long long)ctx.submission);
    if (ctx.check[0])
        lb_field(b, "check", ctx.check);
    if (ctx.provider[0])
        lb_field(b, "provider", ctx.provider);
    if (ctx.attempt >= 0)
        lb_int_field(b, "attempt", ctx.attempt);
}

static void end_line(linebuf_t *b)
{
    lb_str(b, "}\n");
    const char *p = b->p;
    size_t left = b->len;
    int fd = atomic_load(&out_fd);
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w <= 0)
            break;
        p += w;
        left -= (size_t)w;
    }
    if (b->p != b->stack)
        free(b->p);
}

void ev_log(ev_log_level_t level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&min_level) || level >= EV_LOG_OFF)
        return;
    char small[512];
    char *msg = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(small)) {
        msg = ev_malloc((size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(msg, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    linebuf_t b;
    begin_line(&b, level, n < 0 ? "(bad log format)" : msg);
    end_line(&b);
    if (msg != small)
        free(msg);
}

void ev_log_kv(ev_log_level_t level, const char *msg, ...)
{
    if ((int)level < atomic_load(&min_level) || level >= EV_LOG_OFF)
        return;
    linebuf_t b;
    begin_line(&b, level, msg);
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        lb_field(&b, k, v ? v : "");
    }
    va_end(ap);
    end_line(&b);
}
