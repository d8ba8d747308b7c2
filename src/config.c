/*
 * config.c - the one declarative table of SPEC §3 and its parser.
 *
 * Every variable is described once in `table` below: name, type, where it
 * lands in ev_config_t, default, accepted range and flags. ev_config_load()
 * walks the table, parses and range-checks each value, then checks the few
 * rules that relate two variables (min <= max). This file is the only caller
 * of getenv() in the program. Runs once in main before any thread; the result
 * is immutable afterwards and shared read-only.
 */
#include "ev/config.h"

#include "ev/error.h"
#include "ev/spend.h"
#include "ev/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum {
    T_STRING, /* char *, non-empty */
    T_OPTSTR, /* char *, NULL when unset or empty */
    T_URL,    /* char *, http(s)://..., trailing '/' removed */
    T_INT,    /* int */
    T_BYTES,  /* int64_t, accepts K/M/G (binary) suffixes */
    T_DOUBLE, /* double */
    T_FACTOR, /* double in (0, 1] */
    T_BOOL,   /* bool */
    T_SECRET, /* ev_secret_t *, with a NAME_FILE variant */
    T_SECSTR, /* char *, non-empty, with a NAME_FILE variant (a URL holding a password) */
    T_LEVEL,  /* ev_log_level_t */
    T_ADDR,   /* char *, a numeric IPv4/IPv6 address */
    T_DIR,    /* char *, an existing directory; NULL when unset */
} vtype_t;

typedef struct {
    const char *name;
    vtype_t type;
    size_t offset;
    const char *def; /* NULL: no default */
    double min, max;
} var_t;

#define F(field) offsetof(ev_config_t, field)
#define G(field) offsetof(ev_config_t, providers[EV_PROVIDER_GEMINI].field)
#define Q(field) offsetof(ev_config_t, providers[EV_PROVIDER_GROQ].field)
#define O(field) offsetof(ev_config_t, providers[EV_PROVIDER_OPENAI_COMPAT].field)
#define MIB (1024.0 * 1024.0)

/* The breaker, jitter and concurrency variables exist once per provider. */
#define PROVIDER_VARS(P, M, DEF_CONC, DEF_RPM)                                                     \
    {#P "_MAX_CONCURRENT", T_INT, M(max_concurrent), DEF_CONC, 1, 64},                             \
        {#P "_RPM_LIMIT", T_DOUBLE, M(rpm_limit), DEF_RPM, 0, 1000000},                            \
        {#P "_RPD_LIMIT", T_INT, M(rpd_limit), "0", 0, 1000000000},                                \
        {#P "_JITTER_ENABLED", T_BOOL, M(jitter_enabled), "true", 0, 0},                           \
        {#P "_JITTER_MIN", T_DOUBLE, M(jitter_min), "0.9", 0, 10},                                 \
        {#P "_JITTER_MAX", T_DOUBLE, M(jitter_max), "1.6", 0, 10},                                 \
        {#P "_CIRCUIT_BREAKER_THRESHOLD", T_FACTOR, M(cb_threshold), "0.05", 0, 1},                \
        {#P "_CIRCUIT_BREAKER_WINDOW", T_INT, M(cb_window_s), "120", 1, 86400},                    \
        {#P "_CIRCUIT_BREAKER_COOLDOWN", T_INT, M(cb_cooldown_s), "60", 1, 86400},                 \
        {#P "_CIRCUIT_BREAKER_MIN_CALLS", T_INT, M(cb_min_calls), "10", 1, 1000000},               \
        {#P "_API_KEY", T_SECRET, M(api_key), NULL, 0, 0},                                         \
        {#P "_MAX_REQUEST_BYTES", T_BYTES, M(max_request_bytes), "0", 0, 1000000000},              \
    {                                                                                              \
#P "_BASE_URL", T_URL, M(base_url), NULL, 0, 0                                             \
    }

static const var_t table[] = {
    {"DATABASE_URL", T_SECSTR, F(database_url), "postgresql:///event_validator", 0, 0},
    {"DEFAULT_MAX_WORKERS", T_INT, F(max_workers), "6", 1, 256},
    {"WORKER_STAGGER_MS", T_INT, F(worker_stagger_ms), "250", 0, 60000},
    {"STAGGER_MIN_MS", T_INT, F(stagger_min_ms), "100", 0, 600000},
    {"STAGGER_MAX_MS", T_INT, F(stagger_max_ms), "500", 0, 600000},
    {"POLL_INTERVAL_MS", T_INT, F(poll_interval_ms), "1000", 10, 600000},
    {"LEASE_SECONDS", T_INT, F(lease_seconds), "120", 5, 86400},
    {"MAX_ATTEMPTS", T_INT, F(max_attempts), "5", 1, 100},
    {"REQUEUE_BASE_MS", T_INT, F(requeue_base_ms), "30000", 1, 86400000},
    {"REQUEUE_MAX_MS", T_INT, F(requeue_max_ms), "600000", 1, 86400000},
    {"SHUTDOWN_GRACE_MS", T_INT, F(shutdown_grace_ms), "30000", 0, 3600000},

    PROVIDER_VARS(GEMINI, G, "2", "150"),
    /* The model lists and their single-model aliases; defaults in
     * default_models below. */
    {"GEMINI_MODELS", T_OPTSTR, G(models_spec), NULL, 0, 0},
    {"GEMINI_MODEL", T_OPTSTR, G(model_alias), NULL, 0, 0},
    /* -1 omits thinkingConfig (the model's own default): Gemini 3 models
     * refuse a budget of 0. 32768 is the largest budget any model takes. */
    {"GEMINI_THINKING_BUDGET", T_INT, G(thinking_budget), "-1", -1, 32768},
    {"RATE_LIMIT_SAFETY_FACTOR", T_FACTOR, G(safety_factor), "0.9", 0, 1},
    {"GEMINI_TPM_LIMIT", T_INT, G(tpm_limit), "0", 0, 100000000},

    PROVIDER_VARS(GROQ, Q, "1", "25"),
    {"GROQ_MODELS", T_OPTSTR, Q(models_spec), NULL, 0, 0},
    {"GROQ_MODEL", T_OPTSTR, Q(model_alias), NULL, 0, 0},
    {"GROQ_VISION_MODELS", T_OPTSTR, Q(vision_spec), NULL, 0, 0},
    {"GROQ_VISION_MODEL", T_OPTSTR, Q(vision_alias), NULL, 0, 0},
    {"GROQ_RATE_LIMIT_SAFETY_FACTOR", T_FACTOR, Q(safety_factor), "0.8", 0, 1},
    {"GROQ_TPM_LIMIT", T_INT, Q(tpm_limit), "0", 0, 100000000},
    {"ADAPTIVE_LIMITS", T_BOOL, F(adaptive_limits), "true", 0, 0},
    {"CHECK_MODE", T_STRING, F(check_mode), "separate", 0, 0},

    /* Optional: any OpenAI-compatible endpoint (OpenAI, OpenRouter, vLLM,
     * Ollama); used when it has a key, so a base URL and models too. */
    PROVIDER_VARS(OPENAI_COMPAT, O, "2", "60"),
    {"OPENAI_COMPAT_MODELS", T_OPTSTR, O(models_spec), NULL, 0, 0},
    {"OPENAI_COMPAT_VISION_MODELS", T_OPTSTR, O(vision_spec), NULL, 0, 0},
    {"OPENAI_COMPAT_RATE_LIMIT_SAFETY_FACTOR", T_FACTOR, O(safety_factor), "0.9", 0, 1},
    {"PROVIDER_ORDER", T_OPTSTR, F(provider_order_spec), "gemini,groq", 0, 0},
    {"PREFLIGHT", T_BOOL, F(preflight), "true", 0, 0},

    {"HTTP_TIMEOUT_MS", T_INT, F(http_timeout_ms), "60000", 100, 600000},
    {"MAX_RETRIES", T_INT, F(max_retries), "2", 0, 10},
    {"RETRY_BASE_MS", T_INT, F(retry_base_ms), "1000", 1, 600000},
    {"RETRY_MAX_MS", T_INT, F(retry_max_ms), "60000", 1, 3600000},
    /* A 429's Retry-After pauses the whole provider; an absurd one must not stop it for days. */
    {"PROVIDER_MAX_PAUSE_MS", T_INT, F(provider_max_pause_ms), "60000", 1000, 86400000},
    {"RETRY_MAX_WAIT_MS", T_INT, F(retry_max_wait_ms), "10000", 0, 3600000},
    {"RETRY_BUDGET_RATIO", T_DOUBLE, F(retry_budget_ratio), "0.2", 0, 10},
    {"MAX_API_CALLS_PER_SUBMISSION", T_INT, F(max_api_calls_per_submission), "5", 1, 1000},

    /* Gemini takes PDFs of up to 50 MB inline, in requests of up to 100 MB of
     * base64 (75,000,000 raw bytes): the most any provider accepts inline. */
    {"PDF_MAX_BYTES", T_BYTES, F(pdf_max_bytes), "50000000", 1, 75000000},
    {"PDF_MAX_PAGES", T_INT, F(pdf_max_pages), "100", 1, 1000},
    {"IMAGE_MAX_BYTES", T_BYTES, F(image_max_bytes), "4MiB", 1, 75000000},
    {"MAX_IMAGES", T_INT, F(max_images), "5", 1, 16},
    {"UPLOAD_DIR", T_DIR, F(upload_dir), NULL, 0, 0},
    /* One parse of an untrusted file; an honest 100-page PDF needs well under 1 s. */
    {"PARSE_CPU_MS", T_INT, F(parse_cpu_ms), "2000", 100, 600000},
    {"PARSE_MEMORY_MB", T_INT, F(parse_memory_mb), "512", 32, 65536},
    {"PARSE_TIMEOUT_MS", T_INT, F(parse_timeout_ms), "10000", 200, 3600000},
    /* Groq's documented per-image cap; Gemini scales larger images down. */
    {"IMAGE_MAX_MEGAPIXELS", T_DOUBLE, F(image_max_megapixels), "33", 0.01, 10000},
    {"IMAGE_SPLIT_REQUESTS", T_BOOL, F(image_split_requests), "true", 0, 0},

    {"CLUSTER_COORDINATION", T_BOOL, F(cluster_enabled), "true", 0, 0},
    {"CLUSTER_HEARTBEAT_MS", T_INT, F(cluster_heartbeat_ms), "1000", 100, 60000},
    {"CLUSTER_REPLICA_EXPIRE_S", T_INT, F(cluster_expire_s), "10", 2, 3600},
    {"CLUSTER_KEEPALIVE_S", T_INT, F(cluster_keepalive_s), "5", 1, 600},

    {"STATS_ADDR", T_ADDR, F(stats_addr), "0.0.0.0", 0, 0},
    {"STATS_PORT", T_INT, F(stats_port), "8080", 0, 65535},
    {"API_ENABLED", T_BOOL, F(api_enabled), "true", 0, 0},
    {"API_ADDR", T_ADDR, F(api_addr), "127.0.0.1", 0, 0},
    {"API_PORT", T_INT, F(api_port), "8081", 0, 65535},
    {"API_UPLOADS_PER_MINUTE", T_INT, F(api_uploads_per_minute), "60", 0, 100000},
    {"API_UPLOAD_BURST", T_INT, F(api_upload_burst), "10", 1, 10000},
    {"API_IDLE_TIMEOUT_S", T_INT, F(api_idle_timeout_s), "30", 1, 3600},
    {"WEBHOOK_ALLOW_PRIVATE", T_BOOL, F(webhook_allow_private), "false", 0, 0},
    {"WEBHOOK_TIMEOUT_MS", T_INT, F(webhook_timeout_ms), "10000", 100, 600000},
    {"WEBHOOK_RETRY_BASE_MS", T_INT, F(webhook_retry_base_ms), "5000", 1, 86400000},
    {"WEBHOOK_RETRY_MAX_MS", T_INT, F(webhook_retry_max_ms), "3600000", 1, 86400000},
    {"WEBHOOK_MAX_AGE_S", T_INT, F(webhook_max_age_s), "86400", 1, 2592000},
    {"LOG_LEVEL", T_LEVEL, F(log_level), "info", 0, 0},

    {"DAILY_SPEND_LIMIT_USD", T_DOUBLE, F(daily_spend_limit_usd), "0", 0, 1000000000},
    {"MODEL_PRICES", T_OPTSTR, F(model_prices), NULL, 0, 0},
    {"HOLD_RETRY_MS", T_INT, F(hold_retry_ms), "5000", 100, 3600000},
};

static const char *const default_base_url[EV_PROVIDER_COUNT] = {
    "https://generativelanguage.googleapis.com/v1beta", "https://api.groq.com/openai/v1",
    NULL, /* OPENAI_COMPAT_BASE_URL has no default */
};

/* Prefix of each provider's variables. */
static const char *const env_prefix[EV_PROVIDER_COUNT] = {"GEMINI", "GROQ", "OPENAI_COMPAT"};

/* Generally available on 2026-12-02 (README, "Models"), best first. Groq
 * serves images only with preview models. */
static const char *const default_models[EV_PROVIDER_COUNT] = {
    "gemini-3.5-flash-lite,gemini-3.5-flash",
    "openai/gpt-oss-120b,openai/gpt-oss-20b",
    NULL,
};
static const char *const default_vision[EV_PROVIDER_COUNT] = {
    NULL, /* Gemini: every model takes images */
    "qwen/qwen3.8-27b,qwen/qwen3.6-27b",
    NULL,
};

const char *ev_provider_name(ev_provider_id_t id)
{
    switch (id) {
    case EV_PROVIDER_GEMINI:
        return "gemini";
    case EV_PROVIDER_GROQ:
        return "groq";
    case EV_PROVIDER_OPENAI_COMPAT:
        return "openai_compat";
    default:
        return "unknown";
    }
}

static const char *env_lookup(const char *name, void *ctx)
{
    (void)ctx;
    return getenv(name);
}

/* Formats a range bound without trailing zeros ("0.9", "100000"). */
static void fmt_num(char *buf, size_t n, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, n, "%.0f", v);
    else
        snprintf(buf, n, "%g", v);
}

static int range_error(const var_t *v, const char *value, const char *what, char *err,
                       size_t errlen)
{
    char lo[32], hi[32];
    fmt_num(lo, sizeof(lo), v->min);
    fmt_num(hi, sizeof(hi), v->max);
    if (v->type == T_FACTOR)
        ev_set_error(err, errlen, "%s: '%s' %s (accepted: a number greater than 0 and at most 1)",
                     v->name, value, what);
    else if (v->type == T_BYTES)
        ev_set_error(err, errlen, "%s: '%s' %s (accepted: %s to %s bytes; suffixes K, M, KiB, MiB)",
                     v->name, value, what, lo, hi);
    else
        ev_set_error(err, errlen, "%s: '%s' %s (accepted: %s to %s)", v->name, value, what, lo, hi);
    return EV_ECONFIG;
}

static int parse_number(const var_t *v, const char *s, double *out, char *err, size_t errlen)
{
    char *end = NULL;
    errno = 0;
    double d;
    if (v->type == T_INT || v->type == T_BYTES) {
        long long ll = strtoll(s, &end, 10);
        d = (double)ll;
        if (end == s || errno == ERANGE)
            return range_error(v, s, "is not a whole number", err, errlen);
        if (v->type == T_BYTES && *end) {
            const char *suf = end;
            double mult = 0;
            if (!strcasecmp(suf, "k") || !strcasecmp(suf, "kb") || !strcasecmp(suf, "kib"))
                mult = 1024.0;
            else if (!strcasecmp(suf, "m") || !strcasecmp(suf, "mb") || !strcasecmp(suf, "mib"))
                mult = MIB;
            if (mult == 0)
                return range_error(v, s, "has an unknown size suffix", err, errlen);
            d *= mult;
            end += strlen(end);
        }
    } else {
        d = strtod(s, &end);
        if (end == s || errno == ERANGE || !isfinite(d))
            return range_error(v, s, "is not a number", err, errlen);
    }
    while (*end == ' ' || *end == '\t')
        end++;
    if (*end)
        return range_error(v, s, v->type == T_INT ? "is not a whole number" : "is not a number",
                           err, errlen);
    if (v->type == T_FACTOR) {
        if (!(d > 0 && d <= 1))
            return range_error(v, s, "is out of range", err, errlen);
    } else if (d < v->min || d > v->max) {
        return range_error(v, s, "is out of range", err, errlen);
    }
    *out = d;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < EV_ARRAY_LEN(yes); i++) {
        if (!strcasecmp(s, yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcasecmp(s, no[i])) {
            *out = false;
            return 0;
        }
    }
    return EV_EINVAL;
}

/*
 * Reads a NAME_FILE value into buf (NUL-terminated, trailing blanks and line
 * ends removed): a small file, its content never echoed in errors. `what`
 * names the expected content ("one API key"). Returns the length kept, or
 * EV_ECONFIG with err set.
 */
static int read_value_file(const char *var, const char *path, const char *what, char *buf,
                           size_t bufsize, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ev_set_error(err, errlen, "%s: cannot open '%s': %s", var, path, strerror(errno));
        return EV_ECONFIG;
    }
    ssize_t n = read(fd, buf, bufsize);
    int saved = errno;
    close(fd);
    if (n < 0) {
        ev_set_error(err, errlen, "%s: cannot read '%s': %s", var, path, strerror(saved));
        return EV_ECONFIG;
    }
    if ((size_t)n == bufsize) {
        ev_set_error(err, errlen, "%s: '%s' is larger than %zu bytes; expected %s", var, path,
                     bufsize - 1, what);
        return EV_ECONFIG;
    }
    while (n > 0 &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    buf[n] = '\0';
    if (n == 0) {
        ev_set_error(err, errlen, "%s: '%s' is empty; expected %s", var, path, what);
        return EV_ECONFIG;
    }
    return (int)n;
}

/* Reads a NAME_FILE secret (one API key or token). */
static int read_secret_file(const char *var, const char *path, ev_secret_t **out, char *err,
                            size_t errlen)
{
    char buf[4097];
    int rc = read_value_file(var, path, "one API key", buf, sizeof(buf), err, errlen);
    if (rc > 0 && ev_secret_new(out, buf) < 0) {
        ev_set_error(err, errlen, "%s: '%s' is empty; expected one API key", var, path);
        rc = EV_ECONFIG;
    }
    memset(buf, 0, sizeof(buf));
    return rc < 0 ? rc : 0;
}

/*
 * NAME or NAME_FILE, never both. Returns the file variable's name in file_var
 * and its path in *path when the file form is used (else *path is NULL), the
 * inline value in *value.
 */
static int value_or_file(const var_t *v, ev_getenv_fn get, void *ctx, char *file_var,
                         size_t file_var_len, const char **value, const char **path, char *err,
                         size_t errlen)
{
    snprintf(file_var, file_var_len, "%s_FILE", v->name);
    *value = get(v->name, ctx);
    *path = get(file_var, ctx);
    if (*path && !**path)
        *path = NULL;
    if (*value && **value && *path) {
        ev_set_error(err, errlen, "%s and %s are both set; set only one", v->name, file_var);
        return EV_ECONFIG;
    }
    return 0;
}

/* A plain string that may come from NAME_FILE (DATABASE_URL with its
 * password); the file form is for container secrets. */
static int parse_strfile(const var_t *v, ev_getenv_fn get, void *ctx, char **out, char *err,
                         size_t errlen)
{
    char file_var[96];
    const char *value, *path;
    int rc = value_or_file(v, get, ctx, file_var, sizeof(file_var), &value, &path, err, errlen);
    if (rc < 0)
        return rc;
    if (path) {
        char buf[4097];
        rc = read_value_file(file_var, path, "one value", buf, sizeof(buf), err, errlen);
        if (rc > 0)
            *out = ev_strdup(buf);
        memset(buf, 0, sizeof(buf));
        return rc < 0 ? rc : 0;
    }
    *out = ev_strdup(value && *value ? value : v->def);
    return 0;
}

static int parse_secret(const var_t *v, ev_getenv_fn get, void *ctx, ev_secret_t **out, char *err,
                        size_t errlen)
{
    char file_var[96];
    const char *value, *path;
    int rc = value_or_file(v, get, ctx, file_var, sizeof(file_var), &value, &path, err, errlen);
    if (rc < 0)
        return rc;
    if (path)
        return read_secret_file(file_var, path, out, err, errlen);
    if (value && *value) {
        if (ev_secret_new(out, value) < 0) {
            ev_set_error(err, errlen, "%s: the key is blank", v->name);
            return EV_ECONFIG;
        }
    }
    return 0;
}

static int parse_var(const var_t *v, ev_config_t *cfg, ev_getenv_fn get, void *ctx, char *err,
                     size_t errlen)
{
    char *field = (char *)cfg + v->offset;
    if (v->type == T_SECRET)
        return parse_secret(v, get, ctx, (ev_secret_t **)(void *)field, err, errlen);
    if (v->type == T_SECSTR)
        return parse_strfile(v, get, ctx, (char **)(void *)field, err, errlen);

    const char *s = get(v->name, ctx);
    if (!s || !*s)
        s = v->def;
    if (!s)
        return 0;

    double d;
    int rc = 0;
    switch (v->type) {
    case T_STRING:
    case T_OPTSTR:
        *(char **)(void *)field = ev_strdup(s);
        break;
    case T_URL: {
        /* A host must follow the scheme: "http://" alone would lose its
         * slashes below and become "http:". */
        size_t host = strncmp(s, "https://", 8) == 0 ? 8 : 7;
        if ((strncmp(s, "http://", 7) != 0 && host == 7) || s[host] == '\0' || s[host] == '/') {
            ev_set_error(err, errlen, "%s: '%s' is not a URL (accepted: http://... or https://...)",
                         v->name, s);
            return EV_ECONFIG;
        }
        char *u = ev_strdup(s);
        size_t n = strlen(u);
        while (n > 0 && u[n - 1] == '/')
            u[--n] = '\0';
        *(char **)(void *)field = u;
        break;
    }
    case T_INT:
        rc = parse_number(v, s, &d, err, errlen);
        if (rc == 0)
            *(int *)(void *)field = (int)d;
        break;
    case T_BYTES:
        rc = parse_number(v, s, &d, err, errlen);
        if (rc == 0)
            *(int64_t *)(void *)field = (int64_t)d;
        break;
    case T_DOUBLE:
    case T_FACTOR:
        rc = parse_number(v, s, &d, err, errlen);
        if (rc == 0)
            *(double *)(void *)field = d;
        break;
    case T_BOOL:
        if (parse_bool(s, (bool *)(void *)field) < 0) {
            ev_set_error(
                err, errlen,
                "%s: '%s' is not a boolean (accepted: true, false, 1, 0, yes, no, on, off)",
                v->name, s);
            rc = EV_ECONFIG;
        }
        break;
    case T_LEVEL:
        if (ev_log_parse_level((ev_log_level_t *)(void *)field, s) < 0) {
            ev_set_error(err, errlen,
                         "%s: '%s' is not a log level (accepted: debug, info, warn, error)",
                         v->name, s);
            rc = EV_ECONFIG;
        }
        break;
    case T_ADDR: {
        unsigned char tmp[16];
        if (inet_pton(AF_INET, s, tmp) != 1 && inet_pton(AF_INET6, s, tmp) != 1) {
            ev_set_error(err, errlen,
                         "%s: '%s' is not an IP address (accepted: e.g. 0.0.0.0, 127.0.0.1, ::)",
                         v->name, s);
            return EV_ECONFIG;
        }
        *(char **)(void *)field = ev_strdup(s);
        break;
    }
    case T_DIR: {
        struct stat st;
        if (stat(s, &st) != 0 || !S_ISDIR(st.st_mode)) {
            ev_set_error(err, errlen, "%s: '%s' is not an existing directory", v->name, s);
            return EV_ECONFIG;
        }
        char *real = realpath(s, NULL);
        *(char **)(void *)field = ev_strdup(real ? real : s);
        free(real);
        break;
    }
    case T_SECRET:
    case T_SECSTR:
        break;
    }
    return rc;
}

static bool model_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == '/' || c == ':' || c == '@';
}

/* Splits a comma-separated list of model names into list (n entries).
 * Returns 0, or EV_ECONFIG with one line naming `var`. */
static int parse_models(const char *var, const char *spec, char **list, size_t *n, char *err,
                        size_t errlen)
{
    *n = 0;
    for (const char *p = spec; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        size_t len = (size_t)(p - start);
        while (len > 0 && start[len - 1] == ' ')
            len--;
        bool ok = len > 0 && *n < EV_CONFIG_MAX_MODELS;
        for (size_t i = 0; ok && i < len; i++)
            ok = model_char_ok(start[i]);
        for (size_t i = 0; ok && i < *n; i++)
            ok = strlen(list[i]) != len || strncmp(list[i], start, len) != 0;
        if (!ok && len == 0 && !*p && *n > 0)
            break; /* a trailing comma */
        if (!ok) {
            ev_set_error(err, errlen,
                         "%s: '%s' is not a list of model names (accepted: 1 to %d distinct "
                         "names of letters, digits and . _ - / : @, separated by commas)",
                         var, spec, EV_CONFIG_MAX_MODELS);
            return EV_ECONFIG;
        }
        list[(*n)++] = ev_strndup(start, len);
    }
    if (*n == 0) {
        ev_set_error(err, errlen, "%s: no model named (accepted: 1 to %d names, comma-separated)",
                     var, EV_CONFIG_MAX_MODELS);
        return EV_ECONFIG;
    }
    return 0;
}

/* One list from its *_MODELS variable, else its single-model alias, else
 * the default. NULL spec: no list. */
static int pick_list(const char *prefix, const char *what, const char *list_var,
                     const char *alias_var, const char *dflt, char **list, size_t *n, char *err,
                     size_t errlen)
{
    char name[64], alias[64];
    snprintf(name, sizeof(name), "%s_%sMODELS", prefix, what);
    snprintf(alias, sizeof(alias), "%s_%sMODEL", prefix, what);
    if (list_var && alias_var) {
        ev_set_error(err, errlen, "%s and %s are both set; set only one (%s is the list)", name,
                     alias, name);
        return EV_ECONFIG;
    }
    const char *spec = list_var ? list_var : alias_var ? alias_var : dflt;
    *n = 0;
    if (!spec)
        return 0;
    return parse_models(list_var || !alias_var ? name : alias, spec, list, n, err, errlen);
}

static int resolve_models(ev_provider_config_t *p, char *err, size_t errlen)
{
    const char *pre = env_prefix[p->id];
    int rc = pick_list(pre, "", p->models_spec, p->model_alias, default_models[p->id], p->models,
                       &p->n_models, err, errlen);
    if (rc == 0 && p->id == EV_PROVIDER_GEMINI) {
        for (size_t i = 0; i < p->n_models; i++)
            p->vision_models[i] = ev_strdup(p->models[i]);
        p->n_vision_models = p->n_models;
    } else if (rc == 0) {
        rc = pick_list(pre, "VISION_", p->vision_spec, p->vision_alias, default_vision[p->id],
                       p->vision_models, &p->n_vision_models, err, errlen);
    }
    if (rc == 0 && p->api_key && !p->base_url) {
        ev_set_error(err, errlen,
                     "%s_BASE_URL: required when %s_API_KEY is set (accepted: "
                     "http://... or https://...)",
                     pre, pre);
        rc = EV_ECONFIG;
    }
    if (rc == 0 && p->api_key && p->n_models == 0) {
        ev_set_error(err, errlen,
                     "%s_MODELS: required when %s_API_KEY is set (accepted: 1 to %d model "
                     "names, comma-separated)",
                     pre, pre, EV_CONFIG_MAX_MODELS);
        rc = EV_ECONFIG;
    }
    p->model = p->n_models ? p->models[0] : NULL;
    p->vision_model = p->n_vision_models ? p->vision_models[0] : p->model;
    return rc;
}

/* PROVIDER_ORDER, then every provider it does not name, in id order. */
static int resolve_order(ev_config_t *c, char *err, size_t errlen)
{
    bool seen[EV_PROVIDER_COUNT] = {false};
    c->n_provider_order = 0;
    const char *spec = c->provider_order_spec ? c->provider_order_spec : "";
    for (const char *p = spec; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ')
            p++;
        size_t len = (size_t)(p - start);
        if (len == 0)
            continue;
        int id = -1;
        for (int i = 0; i < EV_PROVIDER_COUNT; i++)
            if (strlen(ev_provider_name((ev_provider_id_t)i)) == len &&
                strncmp(ev_provider_name((ev_provider_id_t)i), start, len) == 0)
                id = i;
        if (id < 0 || seen[id]) {
            ev_set_error(err, errlen,
                         "PROVIDER_ORDER: '%s' %s (accepted: gemini, groq, openai_compat, each "
                         "at most once, separated by commas)",
                         spec, id < 0 ? "names an unknown provider" : "names a provider twice");
            return EV_ECONFIG;
        }
        seen[id] = true;
        c->provider_order[c->n_provider_order++] = (ev_provider_id_t)id;
    }
    for (int i = 0; i < EV_PROVIDER_COUNT; i++)
        if (!seen[i])
            c->provider_order[c->n_provider_order++] = (ev_provider_id_t)i;
    return 0;
}

/*
 * A Gemini model name becomes a URL path segment ("models/NAME:generateContent"):
 * a '/', ':' or '@' in it would address another resource.
 */
static int gemini_models_check(const ev_provider_config_t *p, char *err, size_t errlen)
{
    for (size_t m = 0; m < p->n_models; m++) {
        if (strcspn(p->models[m], "/:@") == strlen(p->models[m]))
            continue;
        ev_set_error(err, errlen,
                     "%s: '%s' is not a Gemini model name (accepted: letters, digits, '.', '_' "
                     "and '-', e.g. gemini-2.5-flash)",
                     p->models_spec ? "GEMINI_MODELS" : "GEMINI_MODEL", p->models[m]);
        return EV_ECONFIG;
    }
    return 0;
}

/* Rules that relate two variables; checked after every value parsed. */
static int cross_check(const ev_config_t *c, char *err, size_t errlen)
{
    if (strcmp(c->check_mode, "separate") != 0 && strcmp(c->check_mode, "combined") != 0) {
        ev_set_error(err, errlen, "CHECK_MODE: '%s' is not a mode (accepted: separate, combined)",
                     c->check_mode);
        return EV_ECONFIG;
    }
    if (c->stagger_min_ms > c->stagger_max_ms) {
        ev_set_error(err, errlen, "STAGGER_MIN_MS (%d) is greater than STAGGER_MAX_MS (%d)",
                     c->stagger_min_ms, c->stagger_max_ms);
        return EV_ECONFIG;
    }
    if (c->requeue_base_ms > c->requeue_max_ms) {
        ev_set_error(err, errlen, "REQUEUE_BASE_MS (%d) is greater than REQUEUE_MAX_MS (%d)",
                     c->requeue_base_ms, c->requeue_max_ms);
        return EV_ECONFIG;
    }
    if (c->webhook_retry_base_ms > c->webhook_retry_max_ms) {
        ev_set_error(err, errlen,
                     "WEBHOOK_RETRY_BASE_MS (%d) is greater than WEBHOOK_RETRY_MAX_MS (%d)",
                     c->webhook_retry_base_ms, c->webhook_retry_max_ms);
        return EV_ECONFIG;
    }
    if (c->retry_base_ms > c->retry_max_ms) {
        ev_set_error(err, errlen, "RETRY_BASE_MS (%d) is greater than RETRY_MAX_MS (%d)",
                     c->retry_base_ms, c->retry_max_ms);
        return EV_ECONFIG;
    }
    if (c->model_prices && ev_price_check_overrides(c->model_prices, err, errlen) < 0)
        return EV_ECONFIG;
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        const ev_provider_config_t *p = &c->providers[i];
        if (p->rpm_limit > 0 && p->rpm_limit < 1) {
            /* The limiter cannot pace slower than that; say so here, by name. */
            ev_set_error(err, errlen,
                         "%s_RPM_LIMIT: '%g' is too small (accepted: 0 for unlimited, or 1 to "
                         "1000000 requests a minute)",
                         env_prefix[i], p->rpm_limit);
            return EV_ECONFIG;
        }
        if (p->rpm_limit > 0 && p->rpm_limit * p->safety_factor < 1e-3) {
            ev_set_error(err, errlen,
                         "%sRATE_LIMIT_SAFETY_FACTOR: '%g' leaves less than 0.001 requests a "
                         "minute of %s_RPM_LIMIT %g (accepted: a number greater than 0 and at "
                         "most 1, at least 0.001 / the RPM limit)",
                         i == EV_PROVIDER_GEMINI ? ""
                         : i == EV_PROVIDER_GROQ ? "GROQ_"
                                                 : "OPENAI_COMPAT_",
                         p->safety_factor, env_prefix[i], p->rpm_limit);
            return EV_ECONFIG;
        }
        if (i == EV_PROVIDER_GEMINI && gemini_models_check(p, err, errlen) < 0)
            return EV_ECONFIG;
        if (p->jitter_min > p->jitter_max) {
            ev_set_error(err, errlen, "%s_JITTER_MIN (%g) is greater than %s_JITTER_MAX (%g)",
                         env_prefix[i], p->jitter_min, env_prefix[i], p->jitter_max);
            return EV_ECONFIG;
        }
    }
    return 0;
}

int ev_config_load(ev_config_t **out, ev_getenv_fn getenv_fn, void *ctx, char *err, size_t errlen)
{
    int rc = 0;
    ev_config_t *cfg = ev_calloc(1, sizeof(*cfg));
    ev_getenv_fn get = getenv_fn ? getenv_fn : env_lookup;
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';

    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        cfg->providers[i].id = (ev_provider_id_t)i;
        cfg->providers[i].thinking_budget = -1;
    }
    for (size_t i = 0; i < EV_ARRAY_LEN(table); i++) {
        rc = parse_var(&table[i], cfg, get, ctx, err, errlen);
        if (rc < 0)
            goto out;
    }
    for (int i = 0; i < EV_PROVIDER_COUNT && rc == 0; i++) {
        ev_provider_config_t *p = &cfg->providers[i];
        if (!p->base_url && default_base_url[i])
            p->base_url = ev_strdup(default_base_url[i]);
        rc = resolve_models(p, err, errlen);
    }
    if (rc == 0)
        rc = resolve_order(cfg, err, errlen);
    if (rc == 0)
        rc = cross_check(cfg, err, errlen);
out:
    if (rc < 0) {
        ev_config_free(cfg);
        return EV_ECONFIG;
    }
    *out = cfg;
    return 0;
}

void ev_config_free(ev_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->database_url);
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        ev_provider_config_t *p = &cfg->providers[i];
        ev_secret_free(p->api_key);
        for (size_t m = 0; m < p->n_models; m++)
            free(p->models[m]);
        for (size_t m = 0; m < p->n_vision_models; m++)
            free(p->vision_models[m]);
        free(p->models_spec);
        free(p->vision_spec);
        free(p->model_alias);
        free(p->vision_alias);
        free(p->base_url);
    }
    free(cfg->provider_order_spec);
    free(cfg->check_mode);
    free(cfg->upload_dir);
    free(cfg->stats_addr);
    free(cfg->model_prices);
    free(cfg->api_addr);
    free(cfg);
}

const char *ev_config_var_name(size_t i, bool *file_variant)
{
    if (i >= EV_ARRAY_LEN(table))
        return NULL;
    if (file_variant)
        *file_variant = table[i].type == T_SECRET || table[i].type == T_SECSTR;
    return table[i].name;
}

bool ev_config_var_range(size_t i, double *min, double *max)
{
    if (i >= EV_ARRAY_LEN(table))
        return false;
    vtype_t t = table[i].type;
    bool numeric = t == T_INT || t == T_BYTES || t == T_DOUBLE || t == T_FACTOR;
    *min = t == T_FACTOR ? 1e-6 : table[i].min;
    *max = t == T_FACTOR ? 1 : table[i].max;
    return numeric;
}

bool ev_config_any_provider(const ev_config_t *cfg)
{
    for (int i = 0; i < EV_PROVIDER_COUNT; i++)
        if (cfg->providers[i].api_key)
            return true;
    return false;
}

/* Strips any password from a libpq URI/conninfo for logging. */
static char *redact_url(const char *url)
{
    char *copy = ev_strdup(url);
    char *scheme = strstr(copy, "://");
    if (scheme) {
        char *at = strchr(scheme + 3, '@');
        char *colon = strchr(scheme + 3, ':');
        if (at && colon && colon < at) {
            char *r = ev_asprintf("%.*s:***%s", (int)(colon - copy), copy, at);
            free(copy);
            return r;
        }
    }
    char *pw = strstr(copy, "password=");
    if (pw) {
        char *end = strchr(pw, ' ');
        char *r = ev_asprintf("%.*spassword=***%s", (int)(pw - copy), copy, end ? end : "");
        free(copy);
        return r;
    }
    return copy;
}

/* "a,b,c" of a model list (caller frees). */
static char *join_models(char *const *list, size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(list[i]) + 1;
    char *out = ev_calloc(1, len);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strncat(out, ",", len - strlen(out) - 1);
        strncat(out, list[i], len - strlen(out) - 1);
    }
    return out;
}

/* One provider's part of the configuration line (caller frees). */
static char *describe_provider(const ev_provider_config_t *p)
{
    char *models = join_models(p->models, p->n_models);
    char *vision = join_models(p->vision_models, p->n_vision_models);
    char *d = ev_asprintf("%s key=%s models=%s vision=%s url=%s conc=%d rpm=%g safety=%g "
                          "jitter=%s[%g,%g] breaker=%g/%ds/%ds/min%d max_request=%lld tpm=%d",
                          ev_provider_name(p->id), ev_secret_describe(p->api_key), models, vision,
                          p->base_url ? p->base_url : "(unset)", p->max_concurrent, p->rpm_limit,
                          p->safety_factor, p->jitter_enabled ? "on" : "off", p->jitter_min,
                          p->jitter_max, p->cb_threshold, p->cb_window_s, p->cb_cooldown_s,
                          p->cb_min_calls, (long long)p->max_request_bytes, p->tpm_limit);
    free(models);
    free(vision);
    return d;
}

void ev_config_log(const ev_config_t *c)
{
    char *db = redact_url(c->database_url);
    char *prov[EV_PROVIDER_COUNT];
    char order[64] = "";
    for (int i = 0; i < EV_PROVIDER_COUNT; i++)
        prov[i] = describe_provider(&c->providers[i]);
    for (int i = 0; i < c->n_provider_order; i++)
        snprintf(order + strlen(order), sizeof(order) - strlen(order), "%s%s", i ? "," : "",
                 ev_provider_name(c->provider_order[i]));
    ev_log(EV_LOG_INFO,
           "configuration: database=%s workers=%d worker_stagger_ms=%d stagger_ms=%d..%d "
           "poll_ms=%d lease_s=%d max_attempts=%d requeue_ms=%d..%d | order=%s preflight=%s | "
           "%s | %s | %s | gemini thinking_budget=%d | "
           "http_timeout_ms=%d retries=%d retry_ms=%d..%d max_wait_ms=%d retry_budget=%g "
           "calls_per_submission=%d pdf_max=%lld pages=%d image_max=%lld max_images=%d "
           "upload_dir=%s stats=%s:%d adaptive_limits=%s | daily_spend_limit_usd=%g "
           "model_prices=%s hold_retry_ms=%d",
           db, c->max_workers, c->worker_stagger_ms, c->stagger_min_ms, c->stagger_max_ms,
           c->poll_interval_ms, c->lease_seconds, c->max_attempts, c->requeue_base_ms,
           c->requeue_max_ms, order, c->preflight ? "on" : "off", prov[0], prov[1], prov[2],
           c->providers[EV_PROVIDER_GEMINI].thinking_budget, c->http_timeout_ms, c->max_retries,
           c->retry_base_ms, c->retry_max_ms, c->retry_max_wait_ms, c->retry_budget_ratio,
           c->max_api_calls_per_submission, (long long)c->pdf_max_bytes, c->pdf_max_pages,
           (long long)c->image_max_bytes, c->max_images,
           c->upload_dir ? c->upload_dir : "(unset: paths refused)", c->stats_addr, c->stats_port,
           c->adaptive_limits ? "on" : "off", c->daily_spend_limit_usd,
           c->model_prices ? c->model_prices : "(built-in)", c->hold_retry_ms);
    for (int i = 0; i < EV_PROVIDER_COUNT; i++)
        free(prov[i]);
    free(db);
}
