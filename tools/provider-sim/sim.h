/*
 * sim.h - internal contract of the provider simulator (tools/provider-sim).
 *
 * The simulator is one process serving fake Gemini and Groq endpoints on a
 * loopback port, plus a small control API. Its modules:
 *
 *   main.c      argv, signals, daemon lifecycle.
 *   server.c    libmicrohttpd glue: routing, request bodies, in-flight
 *               counting, interruptible sleeps and hangs, the control API.
 *   provider.c  per-provider settings, sliding-window rate limiter, fault
 *               draw, counters and their JSON form.
 *   gemini.c    strict Gemini request validation and Gemini-shaped answers.
 *   groq.c      strict Groq request validation and Groq-shaped answers.
 *   common.c    replies, base64, content sniffing, verdict markers, durations.
 *
 * Names are prefixed sim_ (the tool is not part of libev's public API).
 * Functions return 0 or a negative EV_E* code where they can fail.
 */
#ifndef EV_PROVIDER_SIM_H
#define EV_PROVIDER_SIM_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_KEY_MAX 256
#define SIM_LIST_MAX 1024
#define SIM_REASON_MAX 512
#define SIM_MAX_HEADERS 16

/* ---------------------------------------------------------------- faults */

/* Every fault mode: enum suffix, wire name, providers it applies to
 * (bit 0 = Gemini, bit 1 = Groq). */
#define SIM_FAULT_MAP(X)                                                                           \
    X(NONE, "none", 3)                                                                             \
    X(OVERLOADED, "overloaded", 3)                                                                 \
    X(INTERNAL, "internal", 3)                                                                     \
    X(DEADLINE, "deadline", 3)                                                                     \
    X(HTML, "html", 3)                                                                             \
    X(EMPTY, "empty", 3)                                                                           \
    X(GARBAGE, "garbage", 3)                                                                       \
    X(BLOCKED, "blocked", 3)                                                                       \
    X(SAFETY, "safety", 1)                                                                         \
    X(TRUNCATED, "truncated", 3)                                                                   \
    X(HANG, "hang", 3)                                                                             \
    X(DAILY_QUOTA, "daily_quota", 3)                                                               \
    X(ARRAY_ERROR, "array_error", 3)                                                               \
    X(FENCED, "fenced", 3)                                                                         \
    X(BAD_KEY, "bad_key", 3)                                                                       \
    X(TOO_LARGE, "too_large", 3)                                                                   \
    X(JSON_FAILED, "json_failed", 2)

typedef enum {
#define SIM_FAULT_ENUM(name, str, mask) SIM_FAULT_##name,
    SIM_FAULT_MAP(SIM_FAULT_ENUM)
#undef SIM_FAULT_ENUM
        SIM_FAULT_COUNT
} sim_fault_t;

/* Wire name of a fault ("overloaded"); never NULL. */
const char *sim_fault_name(sim_fault_t f);
/* Parse a wire name; returns 0 or EV_EINVAL. */
int sim_fault_parse(sim_fault_t *out, const char *s);
/* Whether the fault exists for provider `prov` (SIM_GEMINI or SIM_GROQ). */
bool sim_fault_applies(sim_fault_t f, int prov);

/* Faults served before the request is validated (they stand for an account
 * problem, not a model problem); every other fault is served after a valid
 * request has waited for its latency. */
bool sim_fault_is_early(sim_fault_t f);

/* -------------------------------------------------------------- settings */

/* SIM_OPENAI is an OpenAI-compatible endpoint: Groq's wire format at
 * /openai/v1, with its own settings and counters. */
typedef enum { SIM_GEMINI = 0, SIM_GROQ = 1, SIM_OPENAI = 2, SIM_NPROV = 3 } sim_prov_id_t;

/* The wire format a provider speaks (SIM_GEMINI or SIM_GROQ): settings and
 * faults that exist for Groq exist for the OpenAI-compatible endpoint too. */
static inline int sim_wire(int id)
{
    return id == SIM_OPENAI ? SIM_GROQ : id;
}

/* "gemini", "groq", "openai". */
const char *sim_prov_name(int id);

/* Everything the control API can change for one provider. Plain data: it is
 * copied whole under the provider lock so a request works on a snapshot. */
typedef struct sim_settings {
    char key[SIM_KEY_MAX];            /* expected API key; "" accepts any non-empty key */
    char models[SIM_LIST_MAX];        /* comma-separated accepted models */
    char vision_models[SIM_LIST_MAX]; /* Groq: models that take images */
    char thinking_only[SIM_LIST_MAX]; /* Gemini: models refusing thinkingBudget 0 */
    char retired[SIM_LIST_MAX];       /* models shut down: Gemini 404, Groq 400
                                         model_decommissioned (settable mid-run) */
    int64_t rpm;                      /* requests per minute; 0 = unlimited */
    double window_s;                  /* sliding window; admits rpm*window_s/60 */
    int64_t rpd;                      /* requests per day (since reset); 0 = unlimited */
    int64_t tpm;                      /* Groq tokens per minute (413 above); 0 = unlimited */
    int64_t latency_ms;               /* answer latency */
    int64_t jitter_ms;                /* latency +- uniform jitter */
    sim_fault_t fault;                /* fault mode */
    double fault_rate;                /* fraction of requests faulted when fail_next < 0 */
    int64_t fail_next;                /* -1: no count; N >= 0: fault only the next N */
    int64_t hang_ms;                  /* hang length; 0 = until the client leaves */
    double retry_info_rate;           /* fraction of Gemini 429s carrying RetryInfo */
    bool shuffle_details;             /* shuffle Gemini error details */
    bool thoughts;                    /* Gemini: add a thought part before the answer */
    bool split_text;                  /* Gemini: split the answer over two text parts */
    int64_t thought_tokens;           /* Gemini: tokens a thinking model spends */
    int64_t max_body_bytes;           /* request size limit */
    int64_t vision_max_bytes;         /* Groq: request size limit with images */
    int64_t max_images;               /* Groq: images per request */
    int64_t html_status;              /* status of the html fault */
    bool require_json_mode;           /* reject requests not asking for JSON output */
    char drop_part[16];               /* combined answers leave this part out ("": none) */
} sim_settings_t;

/* Default settings of a provider, before any flag or control call. */
void sim_settings_default(sim_settings_t *s, sim_prov_id_t id);
/*
 * Apply a control-API JSON object to *s. Validates every key first and
 * changes nothing on error. Returns 0, or EV_EINVAL with a message in err.
 */
int sim_settings_apply(sim_settings_t *s, sim_prov_id_t id, json_object *obj, char *err,
                       size_t errlen);
/* The settings as a JSON object (the key is shown masked). Caller puts. */
json_object *sim_settings_to_json(const sim_settings_t *s, sim_prov_id_t id);
/* Requests the sliding window admits (0 when unlimited). */
int64_t sim_settings_window_limit(const sim_settings_t *s);
/* Whether `name` is one of the comma-separated entries in `list`. */
bool sim_list_has(const char *list, const char *name);

/* -------------------------------------------------------------- provider */

/* One simulated provider: settings, limiter state and counters. */
typedef struct sim_provider {
    sim_prov_id_t id; /* immutable */
    const char *name; /* immutable: "gemini" or "groq" */

    pthread_mutex_t mu;      /* guards every field below up to the counters */
    sim_settings_t settings; /* current settings */
    sim_settings_t initial;  /* settings restored by reset */
    int64_t *win;            /* ring of admission times (us) */
    size_t win_cap, win_head, win_len;
    int64_t day_used;      /* admitted requests since reset */
    int64_t tok_sec[60];   /* tokens used per second slot ... */
    int64_t tok_stamp[60]; /* ... and the second each slot belongs to */
    char last_malformed[SIM_REASON_MAX];

    /* Counters: relaxed atomics, read as snapshots. */
    _Atomic int64_t requests, ok, verdict_valid, verdict_invalid, malformed, auth_failed,
        rate_limited, too_large, faults, hung, in_flight, max_in_flight, bytes_in, bytes_out,
        tokens_in, tokens_out, model_checks;
    _Atomic int64_t fault_served[SIM_FAULT_COUNT];
} sim_provider_t;

void sim_provider_init(sim_provider_t *p, sim_prov_id_t id, const sim_settings_t *initial);
void sim_provider_destroy(sim_provider_t *p);
/* Copy the current settings. Thread-safe. */
void sim_provider_snapshot(sim_provider_t *p, sim_settings_t *out);
/* Apply a control object (see sim_settings_apply); resets the window when
 * the limit changed. Thread-safe. */
int sim_provider_configure(sim_provider_t *p, json_object *obj, char *err, size_t errlen);
/* Reset counters, windows and the day count; with restore, settings too. */
void sim_provider_reset(sim_provider_t *p, bool restore);

/* Restarts max_in_flight from the requests in flight now, keeping every other
 * counter, window and setting (a test judges concurrency from a point on). */
void sim_provider_reset_peak(sim_provider_t *p);

/* Rate-limit outcome of sim_provider_admit. */
typedef struct sim_admit {
    bool limited;     /* true: answer 429 */
    bool daily;       /* the daily quota (not the window) is exhausted */
    int64_t retry_us; /* time until the window admits again */
    int64_t limit;    /* the limit that was hit, as the provider states it: requests per
                       * minute (the rpm setting, whatever the window) or per day */
} sim_admit_t;

/* Take a slot in the sliding window and the daily quota, or report why not.
 * Thread-safe. */
void sim_provider_admit(sim_provider_t *p, int64_t now_us, sim_admit_t *out);
/*
 * Draw the fault for this request at one of the two points it can be served
 * (early = before validation). Counts down fail_next; returns SIM_FAULT_NONE
 * when no fault applies here. Thread-safe.
 */
sim_fault_t sim_provider_take_fault(sim_provider_t *p, bool early);
/* Count a malformed request and remember why. Thread-safe. */
void sim_provider_malformed(sim_provider_t *p, const char *reason);
/* Count a served fault. */
void sim_provider_fault_served(sim_provider_t *p, sim_fault_t f);
/* Groq's tokens-per-minute limit: takes `tokens` now when the last minute's
 * usage plus them stays within `tpm` (or tpm is 0), else takes nothing and
 * sets *used (the minute's usage) and *retry_us (time until enough tokens
 * leave the minute). Returns whether they were taken. Thread-safe. */
bool sim_provider_take_tokens(sim_provider_t *p, int64_t now_us, int64_t tokens, int64_t tpm,
                              int64_t *used, int64_t *retry_us);

/* What Groq's rate-limit headers report. */
typedef struct sim_usage {
    int64_t day_used;
    int64_t tokens_minute;
} sim_usage_t;
void sim_provider_usage(sim_provider_t *p, int64_t now_us, sim_usage_t *out);

/* Enter/leave the handler (in-flight and maximum in-flight counters). */
void sim_provider_enter(sim_provider_t *p);
void sim_provider_leave(sim_provider_t *p);

/* Counters as a JSON object. Caller puts. Thread-safe. */
json_object *sim_provider_stats(sim_provider_t *p);

/* ----------------------------------------------------- requests, replies */

/* One fully received API request, as the provider handlers see it. */
typedef struct sim_request {
    const char *method;
    const char *path;          /* after the provider prefix: "/v1beta/models/m:generateContent" */
    const char *content_type;  /* NULL when absent */
    const char *goog_api_key;  /* x-goog-api-key header, NULL when absent */
    const char *authorization; /* Authorization header, NULL when absent */
    bool key_in_query;         /* the URL carried ?key= */
    const char *body;          /* NUL-terminated; only the first body_len bytes kept */
    size_t body_len;
    size_t total_len; /* bytes the client sent */
    bool too_big;     /* total_len exceeded the cap: body is incomplete */
    bool early;       /* decided from Content-Length before reading the body */
} sim_request_t;

typedef enum {
    SIM_REPLY_SEND = 0, /* send the reply now */
    SIM_REPLY_HANG,     /* keep the client waiting (hang_ms, or until it leaves) */
    SIM_REPLY_CLOSE,    /* drop the connection without an answer */
} sim_action_t;

typedef struct sim_reply {
    int status;
    char *body; /* malloc'd; owned */
    size_t len;
    char content_type[64];
    int nheaders;
    char *hname[SIM_MAX_HEADERS], *hvalue[SIM_MAX_HEADERS];
    sim_action_t action;
    int64_t hang_ms; /* with SIM_REPLY_HANG: 0 = until the client leaves */
} sim_reply_t;

/* Replace the body with a JSON document; takes the reference to obj. */
void sim_reply_json(sim_reply_t *r, int status, json_object *obj, bool pretty);
/* Replace the body with text of the given content type. */
void sim_reply_text(sim_reply_t *r, int status, const char *ctype, const char *text);
/* Add a header (copied). */
void sim_reply_header(sim_reply_t *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sim_reply_free(sim_reply_t *r);

/* Provider handlers: fill *out for the request. Called on a connection
 * thread, without any lock held; may sleep for the configured latency. */
void sim_gemini_handle(sim_provider_t *p, const sim_request_t *rq, sim_reply_t *out);
void sim_groq_handle(sim_provider_t *p, const sim_request_t *rq, sim_reply_t *out);

/* Model-metadata GETs (Gemini GET /v1beta/models/{model}, Groq GET
 * /openai/v1/models): they spend no generation quota, so they are counted
 * as model_checks, never as requests, and no fault applies to them. */
void sim_gemini_models(sim_provider_t *p, const sim_request_t *rq, sim_reply_t *out);
void sim_groq_models(sim_provider_t *p, const sim_request_t *rq, sim_reply_t *out);

/* ------------------------------------------------------------- server */

/* Sleep up to ms; returns false early when the server is stopping. */
bool sim_server_sleep_ms(int64_t ms);
/* Whether the server is stopping. */
bool sim_server_stopping(void);

typedef struct sim_server sim_server_t;
typedef struct sim_server_options {
    const char *addr;         /* IPv4 address to bind */
    int port;                 /* 0 = any free port */
    unsigned max_connections; /* concurrent connections */
} sim_server_options_t;
#define SIM_SERVER_OPTIONS_INIT                                                                    \
    {                                                                                              \
        "127.0.0.1", 0, 1024                                                                       \
    }

/* Start serving the two providers (owned by the caller, must outlive the
 * server). Returns 0, EV_EIO (bind failed) or EV_EINVAL (bad address). */
int sim_server_start(sim_server_t **out, const sim_server_options_t *opt,
                     sim_provider_t *providers);
/* The bound port. */
int sim_server_port(const sim_server_t *srv);
/* Wake every sleeping or hanging handler, stop and free. Accepts NULL. */
void sim_server_stop(sim_server_t *srv);

/* -------------------------------------------------------------- common */

/* Strict standard base64 (A-Z a-z 0-9 + /, '=' padding, length % 4 == 0,
 * no whitespace). On success *out is malloc'd (caller frees). EV_EPARSE. */
int sim_b64_decode(const char *s, size_t n, unsigned char **out, size_t *outlen);
/* Whether the bytes look like the declared MIME type. */
bool sim_sniff_matches(const char *mime, const unsigned char *d, size_t n);

/* Verdict markers found in text: bit 0 OFFTOPIC, bit 1 BADPDF, bit 2 BADIMG;
 * and the parts a combined question asks for ("theme": {"valid" ... in its
 * instruction): SIM_PART_THEME, SIM_PART_PDF, SIM_PART_IMAGE. */
#define SIM_MARKERS 0x7u
#define SIM_PART_THEME 0x8u
#define SIM_PART_PDF 0x10u
#define SIM_PART_IMAGE 0x20u
#define SIM_PARTS 0x38u
unsigned sim_markers_scan(const void *data, size_t n);
/* The model's answer for what was found: one JSON verdict
 * {"valid":...,"score":...,"reason":...}, or for a combined question
 * {"theme":{...},"pdf":{...},...} with each part judged by its own marker
 * and the part named `drop` (NULL or "" for none) left out. Caller frees. */
char *sim_verdict_text(unsigned markers, const char *drop);

/* Parse a whole body as one JSON value (trailing whitespace allowed, depth
 * at most 64). Returns the value (caller puts) or NULL with a message in err. */
json_object *sim_json_parse(const char *body, size_t len, char *err, size_t errlen);
/* Count "/Type /Page" objects in PDF bytes (at least 1). */
int64_t sim_pdf_pages(const unsigned char *d, size_t n);

/* Format a duration Go-style: "120ms", "7.66s", "2m59.56s". */
void sim_fmt_duration(char *buf, size_t n, int64_t us);
/* Format seconds with at most two decimals, rounded up: "2.5", "3". */
void sim_fmt_seconds(char *buf, size_t n, int64_t us);
/* Random lowercase alphanumeric id of length n into buf (n+1 bytes). */
void sim_random_id(char *buf, size_t n);
/* Monotonic now in microseconds. */
int64_t sim_now_us(void);
/* ASCII case-insensitive substring search. */
bool sim_contains_ci(const char *hay, size_t n, const char *needle);
/* Latency for these settings, jitter applied, in ms (>= 0). */
int64_t sim_latency_ms(const sim_settings_t *s);

#endif
