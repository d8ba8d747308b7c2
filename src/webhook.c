/*
 * webhook.c - the webhook outbox sender, signatures and target checks; see
 * webhook.h.
 *
 * How: one sender thread loops: lease the oldest due row (an UPDATE whose
 * sub-select uses FOR UPDATE SKIP LOCKED, so replicas never pick the same
 * row, and which bumps `attempts`, so every later write can be guarded by
 * (id, attempts) like the queue's lease guard), build the body from the
 * submission as it is now, sign it, POST it, and record the outcome. When no
 * row is due it waits for a NOTIFY from the outbox trigger or the poll
 * interval, whichever comes first. Only the sender's own thread touches its
 * ev_db_t and ev_http_t.
 *
 * Threads: the main thread starts and stops the sender; the sender thread
 * (ev_thread_create, "ev-webhooks") does everything else. Shared fields are
 * atomics; there is no lock.
 */
#include "ev/webhook.h"

#include "ev/backoff.h"
#include "ev/error.h"
#include "ev/hash.h"
#include "ev/http.h"
#include "ev/log.h"
#include "ev/provider.h"
#include "ev/queue.h"
#include "ev/stats.h"
#include "ev/threads.h"
#include "ev/util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SECRET_PREFIX "whsec_"
#define SECRET_BYTES 24
#define MAX_RESPONSE ((size_t)64 * 1024)

/* ---- Targets. ---- */

static bool v4_public(uint32_t a)
{
    static const struct {
        uint32_t net, mask;
    } refused[] = {
        {0x00000000, 0xff000000}, /* 0/8 "this network" */
        {0x0a000000, 0xff000000}, /* 10/8 */
        {0x64400000, 0xffc00000}, /* 100.64/10 carrier-grade NAT */
        {0x7f000000, 0xff000000}, /* 127/8 loopback */
        {0xa9fe0000, 0xffff0000}, /* 169.254/16 link-local (cloud metadata) */
        {0xac100000, 0xfff00000}, /* 172.16/12 */
        {0xc0000000, 0xffffff00}, /* 192.0.0/24 protocol assignments */
        {0xc0a80000, 0xffff0000}, /* 192.168/16 */
        {0xc6120000, 0xfffe0000}, /* 198.18/15 benchmarking */
        {0xe0000000, 0xe0000000}, /* 224/3 multicast and reserved */
    };
    for (size_t i = 0; i < EV_ARRAY_LEN(refused); i++)
        if ((a & refused[i].mask) == refused[i].net)
            return false;
    return true;
}

bool ev_webhook_addr_public(const struct sockaddr *addr)
{
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)addr;
        return v4_public(ntohl(in->sin_addr.s_addr));
    }
    if (addr->sa_family != AF_INET6)
        return false;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr;
    const uint8_t *b = a->s6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a))
        return v4_public((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 |
                         b[15]);
    if (IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_MULTICAST(a) ||
        IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_SITELOCAL(a))
        return false;
    /* fc00::/7 unique local; 64:ff9b::/96 NAT64 could reach anything v4. */
    if ((b[0] & 0xfe) == 0xfc || (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b))
        return false;
    return true;
}

/* The host of a URL (without brackets), through libcurl's own parser so the
 * check and the transfer agree on what the host is. */
static int url_host(const char *url, char **host, bool *has_user)
{
    CURLU *u = curl_url();
    char *h = NULL, *user = NULL;
    int rc = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
                     curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK
                 ? 0
                 : EV_EINVAL;
    if (rc == 0) {
        *has_user = curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK;
        size_t n = strlen(h);
        *host = h[0] == '[' && n > 2 ? ev_strndup(h + 1, n - 2) : ev_strdup(h);
    }
    curl_free(h);
    curl_free(user);
    curl_url_cleanup(u);
    return rc;
}

int ev_webhook_url_check(const char *url, bool allow_private, char *why, size_t whylen)
{
    char *host = NULL;
    bool has_user = false;
    int rc = EV_EINVAL;

    if (!url || (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)) {
        ev_set_error(why, whylen, "must start with http:// or https://");
        goto out;
    }
    if (url_host(url, &host, &has_user) < 0 || !host[0]) {
        ev_set_error(why, whylen, "is not a valid URL");
        goto out;
    }
    if (has_user) {
        ev_set_error(why, whylen, "must not contain a user name or password");
        goto out;
    }
    if (!allow_private) {
        struct sockaddr_in in4 = {.sin_family = AF_INET};
        struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
        bool refused = strcasecmp(host, "localhost") == 0 ||
                       (strlen(host) > 10 && !strcasecmp(host + strlen(host) - 10, ".localhost"));
        if (inet_pton(AF_INET, host, &in4.sin_addr) == 1)
            refused |= !ev_webhook_addr_public((struct sockaddr *)&in4);
        else if (inet_pton(AF_INET6, host, &in6.sin6_addr) == 1)
            refused |= !ev_webhook_addr_public((struct sockaddr *)&in6);
        if (refused) {
            ev_set_error(why, whylen,
                         "points at a loopback, private or link-local address, which is not "
                         "allowed (WEBHOOK_ALLOW_PRIVATE)");
            goto out;
        }
    }
    rc = 0;
out:
    free(host);
    return rc;
}

/* ---- Secrets and signatures. ---- */

int ev_webhook_secret_new(char **out)
{
    unsigned char raw[SECRET_BYTES];
    *out = NULL;
    if (ev_random_bytes(raw, sizeof(raw)) < 0)
        return EV_EIO;
    char *b64 = ev_llm_base64(raw, sizeof(raw), NULL);
    *out = ev_asprintf(SECRET_PREFIX "%s", b64);
    free(b64);
    memset(raw, 0, sizeof(raw));
    return 0;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 with optional padding; *len bytes into out (capacity
 * strlen(in)). EV_EINVAL on any other character. */
static int b64_decode(const char *in, unsigned char *out, size_t *len)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (const char *p = in; *p && *p != '='; p++) {
        int v = b64_value(*p);
        if (v < 0)
            return EV_EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    *len = n;
    return n > 0 ? 0 : EV_EINVAL;
}

int ev_webhook_sign(const char *secret, const char *msg_id, int64_t timestamp, const char *body,
                    size_t body_len, char **out)
{
    *out = NULL;
    if (!secret || !msg_id)
        return EV_EINVAL;
    if (strncmp(secret, SECRET_PREFIX, strlen(SECRET_PREFIX)) == 0)
        secret += strlen(SECRET_PREFIX);
    size_t keylen = 0;
    unsigned char *key = ev_malloc(strlen(secret) + 1);
    int rc = b64_decode(secret, key, &keylen);
    if (rc == 0) {
        uint8_t mac[EV_HASH_SHA256_LEN];
        /* HMAC over "id.timestamp.body" without copying the body. */
        char *prefix = ev_asprintf("%s.%" PRId64 ".", msg_id, timestamp);
        char *msg = ev_malloc(strlen(prefix) + body_len + 1);
        memcpy(msg, prefix, strlen(prefix));
        if (body_len)
            memcpy(msg + strlen(prefix), body, body_len);
        ev_hash_hmac_sha256(mac, key, keylen, msg, strlen(prefix) + body_len);
        char *b64 = ev_llm_base64(mac, sizeof(mac), NULL);
        *out = ev_asprintf("v1,%s", b64);
        free(b64);
        free(msg);
        free(prefix);
    }
    memset(key, 0, strlen(secret) + 1);
    free(key);
    return rc;
}

/* ---- The sender. ---- */

struct ev_webhook_sender {
    /* Immutable after start. */
    ev_webhook_options_t opts;
    char *database_url;
    ev_backoff_options_t backoff;
    ev_thread_t thread;
    atomic_bool stop;
    _Atomic uint64_t delivered;
    _Atomic uint64_t failures;
};

/* One leased delivery. */
typedef struct lease {
    char id[24], attempts[16], submission_id[24];
    int attempt;
    char *url, *secret; /* NULL when the event lost its webhook */
    bool too_old;
} lease_t;

static void lease_clear(lease_t *l)
{
    free(l->url);
    if (l->secret)
        memset(l->secret, 0, strlen(l->secret));
    free(l->secret);
    memset(l, 0, sizeof(*l));
}

/* Leases the oldest due row: EV_EEMPTY when none is due. */
static int lease_next(ev_webhook_sender_t *s, ev_db_t *db, lease_t *l)
{
    PGresult *res = NULL;
    char lease_ms[24], age[24];
    snprintf(lease_ms, sizeof(lease_ms), "%d", 2 * s->opts.timeout_ms + 5000);
    snprintf(age, sizeof(age), "%d", s->opts.max_age_s);
    const char *params[] = {lease_ms, age};
    int rc =
        ev_db_exec(db, &res,
                   "UPDATE webhook_deliveries d SET attempts = d.attempts + 1,"
                   "       lease_until = now() + $1::bigint * interval '1 millisecond'"
                   "  FROM events e"
                   " WHERE e.id = d.event_id AND d.id = (SELECT c.id FROM webhook_deliveries c"
                   "        WHERE c.status = 'pending' AND c.next_attempt_at <= now()"
                   "          AND (c.lease_until IS NULL OR c.lease_until < now())"
                   "        ORDER BY c.next_attempt_at, c.id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                   " RETURNING d.id, d.attempts, d.submission_id, e.webhook_url, e.webhook_secret,"
                   "   d.created_at < now() - $2::int * interval '1 second'",
                   2, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return EV_EEMPTY;
    }
    snprintf(l->id, sizeof(l->id), "%s", PQgetvalue(res, 0, 0));
    snprintf(l->attempts, sizeof(l->attempts), "%s", PQgetvalue(res, 0, 1));
    snprintf(l->submission_id, sizeof(l->submission_id), "%s", PQgetvalue(res, 0, 2));
    l->attempt = (int)strtol(l->attempts, NULL, 10);
    if (!PQgetisnull(res, 0, 3) && !PQgetisnull(res, 0, 4)) {
        l->url = ev_strdup(PQgetvalue(res, 0, 3));
        l->secret = ev_strdup(PQgetvalue(res, 0, 4));
    }
    l->too_old = PQgetvalue(res, 0, 5)[0] == 't';
    PQclear(res);
    return 0;
}

/* Records an outcome, guarded by the lease (id, attempts). */
static int record(ev_db_t *db, const lease_t *l, const char *status, int http_status,
                  const char *error, int64_t delay_ms)
{
    char code[16], delay[24];
    snprintf(code, sizeof(code), "%d", http_status);
    snprintf(delay, sizeof(delay), "%" PRId64, delay_ms);
    char *err = ev_db_clip_text(error, 500);
    const char *params[] = {l->id, l->attempts, status, http_status ? code : NULL, err, delay};
    int rc = ev_db_exec(db, NULL,
                        "UPDATE webhook_deliveries SET status = $3, lease_until = NULL,"
                        "       last_http_status = $4::int, last_error = $5,"
                        "       delivered_at = CASE WHEN $3 = 'delivered' THEN now() END,"
                        "       next_attempt_at = now() + $6::bigint * interval '1 millisecond'"
                        " WHERE id = $1::bigint AND attempts = $2::int",
                        6, params);
    free(err);
    return rc;
}

/* Builds the signed body of one delivery; *body and headers[] caller frees. */
static int build(ev_db_t *db, const lease_t *l, char **body, char *headers[3])
{
    char *sub = NULL;
    int rc = ev_queue_submission_json(db, strtoll(l->submission_id, NULL, 10), &sub, NULL);
    if (rc < 0)
        return rc;
    int64_t now_s = ev_clock_wall_us(ev_clock_system()) / 1000000;
    time_t t = (time_t)now_s;
    struct tm tm;
    char ts[32];
    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    *body = ev_asprintf("{\"type\":\"submission.finished\",\"timestamp\":\"%s\",\"submission\":%s}",
                        ts, sub);
    free(sub);
    char msg_id[40], *sig = NULL;
    snprintf(msg_id, sizeof(msg_id), "whd_%s", l->id);
    rc = ev_webhook_sign(l->secret, msg_id, now_s, *body, strlen(*body), &sig);
    if (rc < 0) {
        free(*body);
        *body = NULL;
        return rc;
    }
    headers[0] = ev_asprintf("webhook-id: %s", msg_id);
    headers[1] = ev_asprintf("webhook-timestamp: %" PRId64, now_s);
    headers[2] = ev_asprintf("webhook-signature: %s", sig);
    free(sig);
    return 0;
}

static bool allow_public(const struct sockaddr *addr, void *ctx)
{
    (void)ctx;
    return ev_webhook_addr_public(addr);
}

/* One attempt of one leased delivery, outcome recorded. */
static int attempt(ev_webhook_sender_t *s, ev_db_t *db, ev_http_t *http, lease_t *l)
{
    char *body = NULL, *headers[3] = {NULL, NULL, NULL};
    char error[200] = "";
    ev_http_response_t resp;
    ev_http_response_init(&resp);
    int rc = 0, status = 0;

    if (!l->url) {
        snprintf(error, sizeof(error), "the event no longer has a webhook_url");
    } else if ((rc = build(db, l, &body, headers)) == EV_EINVAL) {
        snprintf(error, sizeof(error), "the event's webhook secret is not valid base64");
    } else if (rc < 0) {
        goto out;
    } else {
        ev_http_request_t req = {.url = l->url,
                                 .body = body,
                                 .body_len = strlen(body),
                                 .headers = (const char *const *)headers,
                                 .header_count = 3,
                                 .timeout_ms = s->opts.timeout_ms,
                                 .max_response_bytes = MAX_RESPONSE,
                                 .stop = &s->stop,
                                 .allow_addr = s->opts.allow_private ? NULL : allow_public};
        rc = ev_http_post(http, &req, &resp);
        status = resp.status;
        if (rc == EV_ESHUTDOWN)
            goto out; /* the lease expires; the row is sent again */
        if (rc == 0 && status >= 200 && status < 300) {
            rc = record(db, l, "delivered", status, NULL, 0);
            atomic_fetch_add(&s->delivered, 1);
            goto out;
        }
        if (rc < 0)
            snprintf(error, sizeof(error), "%s", resp.error[0] ? resp.error : ev_strerror(rc));
        else
            snprintf(error, sizeof(error), "the receiver answered HTTP %d", status);
    }
    atomic_fetch_add(&s->failures, 1);
    bool give_up = l->too_old || !l->url || rc == EV_EINVAL;
    int64_t delay = ev_backoff_delay_ms(&s->backoff, l->attempt - 1, 0);
    ev_log(give_up ? EV_LOG_ERROR : EV_LOG_WARN,
           "webhook delivery %s (submission %s) attempt %d failed: %s%s", l->id, l->submission_id,
           l->attempt, error, give_up ? "; giving up (webhooks retry ID sends it again)" : "");
    rc = record(db, l, give_up ? "failed" : "pending", status, error, give_up ? 0 : delay);
out:
    for (int i = 0; i < 3; i++)
        free(headers[i]);
    free(body);
    ev_http_response_free(&resp);
    return rc;
}

static void *sender_main(void *arg)
{
    ev_webhook_sender_t *s = arg;
    ev_db_t *db = NULL;
    ev_http_t *http = NULL;
    int failures = 0;

    EV_ASSERT(ev_http_new(&http) == 0);
    while (!atomic_load(&s->stop)) {
        int rc = 0;
        if (!db) {
            char why[256];
            rc = ev_db_connect(&db, s->database_url, why, sizeof(why));
            if (rc == 0)
                rc = ev_db_listen(db, EV_WEBHOOK_CHANNEL);
        } else {
            rc = ev_db_ensure(db);
        }
        lease_t l = {0};
        if (rc == 0)
            rc = lease_next(s, db, &l);
        if (rc == 0)
            rc = attempt(s, db, http, &l);
        lease_clear(&l);
        if (rc == 0) {
            failures = 0;
            continue; /* another row may be due */
        }
        if (rc == EV_EEMPTY) {
            failures = 0;
            (void)ev_db_wait_notify(db, s->opts.poll_ms);
            continue;
        }
        /* Database trouble: back off, reconnect next round. */
        if (rc == EV_EDBCONN && db) {
            ev_db_free(db);
            db = NULL;
        }
        int64_t ms = ev_backoff_delay_ms(&s->backoff, failures++, 0);
        (void)ev_backoff_sleep(s->opts.clock, EV_MIN(ms, (int64_t)5000), &s->stop);
    }
    ev_http_free(http);
    ev_db_free(db);
    return NULL;
}

int ev_webhook_sender_start(ev_webhook_sender_t **out, const ev_webhook_options_t *opts)
{
    *out = NULL;
    if (!opts || !opts->database_url || opts->timeout_ms <= 0 || opts->retry_base_ms <= 0 ||
        opts->retry_max_ms < opts->retry_base_ms || opts->max_age_s <= 0 || opts->poll_ms <= 0)
        return EV_EINVAL;
    ev_webhook_sender_t *s = ev_calloc(1, sizeof(*s));
    s->opts = *opts;
    s->database_url = ev_strdup(opts->database_url);
    s->opts.database_url = s->database_url;
    if (!s->opts.clock)
        s->opts.clock = ev_clock_system();
    ev_backoff_options_t b = EV_BACKOFF_OPTIONS_INIT;
    b.base_ms = opts->retry_base_ms;
    b.max_ms = opts->retry_max_ms;
    b.hint_jitter_ms = 0;
    s->backoff = b;
    atomic_init(&s->stop, false);
    int rc = ev_thread_create(&s->thread, "ev-webhooks", sender_main, s);
    if (rc < 0) {
        free(s->database_url);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void ev_webhook_sender_stop(ev_webhook_sender_t *s)
{
    if (!s)
        return;
    atomic_store(&s->stop, true);
    ev_thread_join(&s->thread, NULL);
    free(s->database_url);
    free(s);
}

uint64_t ev_webhook_sender_delivered(const ev_webhook_sender_t *s)
{
    return atomic_load(&((ev_webhook_sender_t *)s)->delivered);
}

uint64_t ev_webhook_sender_failures(const ev_webhook_sender_t *s)
{
    return atomic_load(&((ev_webhook_sender_t *)s)->failures);
}

/* ---- Operators. ---- */

int ev_webhook_list(ev_db_t *db, bool failed_only, char **text)
{
    PGresult *res = NULL;
    ev_stats_buf_t b = {0};
    const char *params[] = {failed_only ? "failed" : NULL};
    *text = NULL;
    int rc =
        ev_db_exec(db, &res,
                   "SELECT d.id, d.submission_id, d.event_id, d.status, d.attempts,"
                   " coalesce(d.last_http_status::text, '-'),"
                   " to_char(d.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
                   " coalesce(d.last_error, '')"
                   " FROM webhook_deliveries d WHERE ($1::text IS NULL OR d.status = $1)"
                   " ORDER BY d.id DESC LIMIT 1000",
                   1, params);
    if (rc < 0)
        return rc;
    ev_stats_buf_printf(&b, "%-8s %-10s %-6s %-10s %-8s %-5s %-20s %s\n", "ID", "SUBMISSION",
                        "EVENT", "STATUS", "ATTEMPTS", "HTTP", "CREATED", "LAST ERROR");
    for (int r = 0; r < PQntuples(res); r++)
        ev_stats_buf_printf(&b, "%-8s %-10s %-6s %-10s %-8s %-5s %-20s %s\n", PQgetvalue(res, r, 0),
                            PQgetvalue(res, r, 1), PQgetvalue(res, r, 2), PQgetvalue(res, r, 3),
                            PQgetvalue(res, r, 4), PQgetvalue(res, r, 5), PQgetvalue(res, r, 6),
                            PQgetvalue(res, r, 7));
    PQclear(res);
    *text = b.data;
    return 0;
}

int ev_webhook_retry(ev_db_t *db, int64_t id)
{
    PGresult *res = NULL;
    char id_s[24];
    snprintf(id_s, sizeof(id_s), "%" PRId64, id);
    const char *params[] = {id_s};
    /* A fresh created_at gives the retried delivery its full age again. */
    int rc = ev_db_exec(db, &res,
                        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(),"
                        "       lease_until = NULL, created_at = now()"
                        " WHERE id = $1::bigint AND status IN ('failed', 'pending')",
                        1, params);
    if (rc < 0)
        return rc;
    rc = strtoll(PQcmdTuples(res), NULL, 10) == 1 ? 0 : EV_ENOTFOUND;
    PQclear(res);
    if (rc == 0)
        rc = ev_db_exec(db, NULL, "SELECT pg_notify('" EV_WEBHOOK_CHANNEL "', '')", 0, NULL);
    return rc;
}

int ev_webhook_counts(ev_db_t *db, int64_t *pending, int64_t *failed)
{
    PGresult *res = NULL;
    *pending = *failed = 0;
    int rc = ev_db_exec(db, &res,
                        "SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'),"
                        " (SELECT count(*) FROM webhook_deliveries WHERE status = 'failed')",
                        0, NULL);
    if (rc < 0)
        return rc;
    *pending = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    *failed = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return 0;
}
