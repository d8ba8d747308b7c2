/*
 * test_config.c - every rule of the configuration table (SPEC §3).
 * Each test builds a fake environment and checks the parsed value or the one
 * line of error naming the variable and its accepted range.
 */
#include "ev/config.h"
#include "ev/error.h"
#include "ev/pipeline.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include "runner.h"

#define MAXV 16
typedef struct {
    const char *k[MAXV];
    const char *v[MAXV];
    int n;
} fakeenv_t;

static const char *fake_get(const char *name, void *ctx)
{
    fakeenv_t *e = ctx;
    for (int i = 0; i < e->n; i++)
        if (!strcmp(e->k[i], name))
            return e->v[i];
    return NULL;
}

static void put(fakeenv_t *e, const char *k, const char *v)
{
    e->k[e->n] = k;
    e->v[e->n] = v;
    e->n++;
}

static char err[512];

static ev_config_t *load_ok(fakeenv_t *e)
{
    ev_config_t *cfg = NULL;
    int rc = ev_config_load(&cfg, fake_get, e, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "unexpected config error: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    return cfg;
}

/* Loads a one-variable environment expected to fail; returns the error line. */
static const char *load_bad(const char *k, const char *v)
{
    fakeenv_t e = {0};
    put(&e, k, v);
    ev_config_t *cfg = (ev_config_t *)0x1;
    int rc = ev_config_load(&cfg, fake_get, &e, err, sizeof(err));
    CU_ASSERT_EQUAL(rc, EV_ECONFIG);
    CU_ASSERT_PTR_NULL(cfg);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, k));
    CU_ASSERT_PTR_NULL(strchr(err, '\n'));
    return err;
}

static void test_defaults(void)
{
    fakeenv_t e = {0};
    ev_config_t *c = load_ok(&e);
    CU_ASSERT_STRING_EQUAL(c->database_url, "postgresql:///event_validator");
    CU_ASSERT_EQUAL(c->max_workers, 6);
    CU_ASSERT_EQUAL(c->worker_stagger_ms, 250);
    CU_ASSERT_EQUAL(c->stagger_min_ms, 100);
    CU_ASSERT_EQUAL(c->stagger_max_ms, 500);
    CU_ASSERT_EQUAL(c->poll_interval_ms, 1000);
    CU_ASSERT_EQUAL(c->lease_seconds, 120);
    CU_ASSERT_EQUAL(c->max_attempts, 5);
    CU_ASSERT_EQUAL(c->requeue_base_ms, 30000);
    CU_ASSERT_EQUAL(c->requeue_max_ms, 600000);
    CU_ASSERT_EQUAL(c->shutdown_grace_ms, 30000);
    const ev_provider_config_t *g = &c->providers[EV_PROVIDER_GEMINI];
    const ev_provider_config_t *q = &c->providers[EV_PROVIDER_GROQ];
    CU_ASSERT_PTR_NULL(g->api_key);
    CU_ASSERT_PTR_NULL(q->api_key);
    CU_ASSERT_FALSE(ev_config_any_provider(c));
    CU_ASSERT_STRING_EQUAL(g->model, "gemini-3.5-flash-lite");
    CU_ASSERT_STRING_EQUAL(g->base_url, "https://generativelanguage.googleapis.com/v1beta");
    CU_ASSERT_STRING_EQUAL(q->model, "openai/gpt-oss-120b");
    CU_ASSERT_STRING_EQUAL(q->vision_model, "qwen/qwen3.8-27b");
    CU_ASSERT_STRING_EQUAL(q->base_url, "https://api.groq.com/openai/v1");
    CU_ASSERT_EQUAL(g->max_concurrent, 2);
    CU_ASSERT_EQUAL(q->max_concurrent, 1);
    CU_ASSERT_DOUBLE_EQUAL(g->rpm_limit, 150, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(g->safety_factor, 0.9, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(q->rpm_limit, 25, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(q->safety_factor, 0.8, 1e-9);
    CU_ASSERT_TRUE(g->jitter_enabled);
    CU_ASSERT_DOUBLE_EQUAL(g->jitter_min, 0.9, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(q->jitter_max, 1.6, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(g->cb_threshold, 0.05, 1e-9);
    CU_ASSERT_EQUAL(q->cb_window_s, 120);
    CU_ASSERT_EQUAL(q->cb_cooldown_s, 60);
    CU_ASSERT_EQUAL(g->cb_min_calls, 10);
    CU_ASSERT_EQUAL(g->thinking_budget, -1); /* omitted: Gemini 3 refuses 0 */
    CU_ASSERT_EQUAL(q->thinking_budget, -1);
    CU_ASSERT_EQUAL(c->http_timeout_ms, 60000);
    CU_ASSERT_EQUAL(c->max_retries, 2);
    CU_ASSERT_EQUAL(c->retry_base_ms, 1000);
    CU_ASSERT_EQUAL(c->retry_max_ms, 60000);
    CU_ASSERT_EQUAL(c->retry_max_wait_ms, 10000);
    CU_ASSERT_DOUBLE_EQUAL(c->retry_budget_ratio, 0.2, 1e-9);
    CU_ASSERT_EQUAL(c->max_api_calls_per_submission, 5);
    CU_ASSERT_EQUAL(c->pdf_max_bytes, 50000000); /* Gemini's inline PDF limit */
    CU_ASSERT_EQUAL(c->pdf_max_pages, 100);
    CU_ASSERT_EQUAL(c->image_max_bytes, 4 * 1024 * 1024);
    CU_ASSERT_EQUAL(c->max_images, 5);
    CU_ASSERT_PTR_NULL(c->upload_dir);
    CU_ASSERT_STRING_EQUAL(c->stats_addr, "0.0.0.0");
    CU_ASSERT_EQUAL(c->stats_port, 8080);
    CU_ASSERT_EQUAL(c->log_level, EV_LOG_INFO);
    ev_config_free(c);
}

static void test_overrides(void)
{
    fakeenv_t e = {0};
    put(&e, "DEFAULT_MAX_WORKERS", "3");
    put(&e, "GROQ_JITTER_ENABLED", "off");
    put(&e, "GEMINI_BASE_URL", "http://127.0.0.1:9/gemini/v1beta///");
    put(&e, "PDF_MAX_BYTES", "2MiB");
    put(&e, "IMAGE_MAX_BYTES", "512k");
    put(&e, "RATE_LIMIT_SAFETY_FACTOR", "1");
    put(&e, "LOG_LEVEL", "DEBUG");
    put(&e, "STATS_ADDR", "::1");
    put(&e, "UPLOAD_DIR", "/tmp/../tmp");
    put(&e, "GROQ_MODEL", "m1");
    ev_config_t *c = load_ok(&e);
    CU_ASSERT_EQUAL(c->max_workers, 3);
    CU_ASSERT_FALSE(c->providers[EV_PROVIDER_GROQ].jitter_enabled);
    CU_ASSERT_STRING_EQUAL(c->providers[EV_PROVIDER_GEMINI].base_url,
                           "http://127.0.0.1:9/gemini/v1beta");
    CU_ASSERT_EQUAL(c->pdf_max_bytes, 2 * 1024 * 1024);
    CU_ASSERT_EQUAL(c->image_max_bytes, 512 * 1024);
    CU_ASSERT_DOUBLE_EQUAL(c->providers[EV_PROVIDER_GEMINI].safety_factor, 1.0, 1e-9);
    CU_ASSERT_EQUAL(c->log_level, EV_LOG_DEBUG);
    CU_ASSERT_STRING_EQUAL(c->stats_addr, "::1");
    CU_ASSERT_STRING_EQUAL(c->upload_dir, "/tmp");
    CU_ASSERT_STRING_EQUAL(c->providers[EV_PROVIDER_GROQ].vision_model, "qwen/qwen3.8-27b");
    ev_config_free(c);
}

static void test_bad_numbers(void)
{
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("DEFAULT_MAX_WORKERS", "abc"), "accepted: 1 to 256"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("DEFAULT_MAX_WORKERS", "-1"), "out of range"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("DEFAULT_MAX_WORKERS", "0"), "out of range"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("DEFAULT_MAX_WORKERS", "4.5"), "whole number"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("DEFAULT_MAX_WORKERS", "6x"), "whole number"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("GEMINI_RPM_LIMIT", "lots"), "not a number"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("GEMINI_RPM_LIMIT", "-5"), "accepted: 0 to 1000000"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("GROQ_RPM_LIMIT", "nan"), "not a number"));
    load_bad("LEASE_SECONDS", "99999999999999999999999");
    load_bad("STATS_PORT", "65536");
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("CHECK_MODE", "together"), "separate, combined"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("GROQ_TPM_LIMIT", "-1"), "accepted: 0 to"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("ADAPTIVE_LIMITS", "maybe"), "ADAPTIVE_LIMITS"));
}

static void test_empty_means_default(void)
{
    fakeenv_t e = {0};
    put(&e, "HTTP_TIMEOUT_MS", "");
    ev_config_t *c = load_ok(&e);
    CU_ASSERT_EQUAL(c->http_timeout_ms, 60000);
    ev_config_free(c);
}

static void test_factors(void)
{
    CU_ASSERT_PTR_NOT_NULL(
        strstr(load_bad("RATE_LIMIT_SAFETY_FACTOR", "0"), "greater than 0 and at most 1"));
    load_bad("RATE_LIMIT_SAFETY_FACTOR", "1.01");
    load_bad("GROQ_RATE_LIMIT_SAFETY_FACTOR", "-0.5");
    load_bad("GEMINI_CIRCUIT_BREAKER_THRESHOLD", "0");
    load_bad("GROQ_CIRCUIT_BREAKER_THRESHOLD", "2");
}

static void test_booleans_and_enums(void)
{
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("GEMINI_JITTER_ENABLED", "maybe"), "not a boolean"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("LOG_LEVEL", "loud"), "debug, info, warn, error"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("GROQ_BASE_URL", "api.groq.com"), "not a URL"));
    /* Found by fuzz_config: "http://" with no host used to load as "http:". */
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("GEMINI_BASE_URL", "http://"), "not a URL"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("GROQ_BASE_URL", "https:///v1"), "not a URL"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("STATS_ADDR", "localhost"), "not an IP address"));
    CU_ASSERT_PTR_NOT_NULL(
        strstr(load_bad("UPLOAD_DIR", "/no/such/dir/here"), "not an existing directory"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("PDF_MAX_BYTES", "3GB"), "unknown size suffix"));
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("PDF_MAX_BYTES", "80MiB"), "out of range"));
}

static void test_min_greater_than_max(void)
{
    fakeenv_t e = {0};
    ev_config_t *c = NULL;
    put(&e, "STAGGER_MIN_MS", "900");
    put(&e, "STAGGER_MAX_MS", "100");
    CU_ASSERT_EQUAL(ev_config_load(&c, fake_get, &e, err, sizeof(err)), EV_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(err, "STAGGER_MIN_MS (900) is greater than STAGGER_MAX_MS (100)"));

    fakeenv_t e2 = {0};
    put(&e2, "GROQ_JITTER_MIN", "2");
    put(&e2, "GROQ_JITTER_MAX", "1.5");
    CU_ASSERT_EQUAL(ev_config_load(&c, fake_get, &e2, err, sizeof(err)), EV_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "GROQ_JITTER_MIN"));

    fakeenv_t e3 = {0};
    put(&e3, "RETRY_BASE_MS", "5000");
    put(&e3, "RETRY_MAX_MS", "100");
    CU_ASSERT_EQUAL(ev_config_load(&c, fake_get, &e3, err, sizeof(err)), EV_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "RETRY_BASE_MS"));
    CU_ASSERT_PTR_NULL(c);
}

static const char *const KEY = "fake-gemini-key-0123456789abcdefghijklmnop";

static void test_keys(void)
{
    fakeenv_t e = {0};
    put(&e, "GEMINI_API_KEY", KEY);
    ev_config_t *c = load_ok(&e);
    CU_ASSERT_PTR_NOT_NULL(c->providers[EV_PROVIDER_GEMINI].api_key);
    CU_ASSERT_PTR_NULL(c->providers[EV_PROVIDER_GROQ].api_key);
    CU_ASSERT_TRUE(ev_config_any_provider(c));
    char *h = ev_secret_header(c->providers[EV_PROVIDER_GEMINI].api_key, "x-goog-api-key: ");
    CU_ASSERT_STRING_EQUAL(h + strlen("x-goog-api-key: "), KEY);
    ev_secret_header_free(h);
    ev_config_free(c);
}

static void test_key_file(void)
{
    char path[] = "/tmp/evkeyXXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, "gsk_filekey123\n", 15) == 15);
    close(fd);

    fakeenv_t e = {0};
    put(&e, "GROQ_API_KEY_FILE", path);
    ev_config_t *c = load_ok(&e);
    char *h = ev_secret_header(c->providers[EV_PROVIDER_GROQ].api_key, "Bearer ");
    CU_ASSERT_STRING_EQUAL(h, "Bearer gsk_filekey123");
    ev_secret_header_free(h);
    ev_config_free(c);

    /* Both forms at once is ambiguous: refused, and the key is not echoed. */
    fakeenv_t e2 = {0};
    put(&e2, "GROQ_API_KEY", "gsk_inline_secret");
    put(&e2, "GROQ_API_KEY_FILE", path);
    c = NULL;
    CU_ASSERT_EQUAL(ev_config_load(&c, fake_get, &e2, err, sizeof(err)), EV_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "set only one"));
    CU_ASSERT_PTR_NULL(strstr(err, "gsk_inline_secret"));

    /* An empty key file is refused. */
    fd = open(path, O_WRONLY | O_TRUNC);
    close(fd);
    fakeenv_t e3 = {0};
    put(&e3, "GROQ_API_KEY_FILE", path);
    CU_ASSERT_EQUAL(ev_config_load(&c, fake_get, &e3, err, sizeof(err)), EV_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "is empty"));
    unlink(path);

    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("GEMINI_API_KEY_FILE", "/no/such/key"), "cannot open"));
}

static void test_log_masks_secrets(void)
{
    char path[] = "/tmp/evlogXXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    fakeenv_t e = {0};
    put(&e, "GEMINI_API_KEY", KEY);
    put(&e, "DATABASE_URL", "postgresql://user:hunter2@db/ev");
    ev_config_t *c = load_ok(&e);
    ev_log_set_fd(fd);
    ev_config_log(c);
    ev_log_set_fd(2);
    ev_config_free(c);
    char buf[8192] = {0};
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    CU_ASSERT(n > 0);
    CU_ASSERT_PTR_NULL(strstr(buf, KEY));
    CU_ASSERT_PTR_NULL(strstr(buf, "hunter2"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "gemini key=set (hidden)"));
    close(fd);
    unlink(path);
}

/* A secret database URL comes from a file, as container secrets are mounted:
 * the trailing newline is dropped, both forms at once are refused, and no
 * error repeats the password. */
static void test_database_url_file(void)
{
    char path[] = "/tmp/evdburlXXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    static const char url[] = "postgresql://ev:s3cret-pw@db:5432/ev\n";
    CU_ASSERT(write(fd, url, strlen(url)) == (ssize_t)strlen(url));
    close(fd);

    fakeenv_t e = {0};
    put(&e, "DATABASE_URL_FILE", path);
    ev_config_t *c = load_ok(&e);
    CU_ASSERT_STRING_EQUAL(c->database_url, "postgresql://ev:s3cret-pw@db:5432/ev");
    ev_config_free(c);

    fakeenv_t e2 = {0};
    put(&e2, "DATABASE_URL", "postgresql://ev:inline-pw@db/ev");
    put(&e2, "DATABASE_URL_FILE", path);
    c = NULL;
    CU_ASSERT_EQUAL(ev_config_load(&c, fake_get, &e2, err, sizeof(err)), EV_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "set only one"));
    CU_ASSERT_PTR_NULL(strstr(err, "inline-pw"));
    CU_ASSERT_PTR_NULL(strstr(err, "s3cret-pw"));

    fd = open(path, O_WRONLY | O_TRUNC);
    CU_ASSERT(write(fd, "\n", 1) == 1);
    close(fd);
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("DATABASE_URL_FILE", path), "is empty"));
    unlink(path);
    CU_ASSERT_PTR_NOT_NULL(strstr(load_bad("DATABASE_URL_FILE", "/no/such/file"), "cannot open"));

    /* An empty DATABASE_URL_FILE means unset: the default applies. */
    fakeenv_t e3 = {0};
    put(&e3, "DATABASE_URL_FILE", "");
    c = load_ok(&e3);
    CU_ASSERT_STRING_EQUAL(c->database_url, "postgresql:///event_validator");
    ev_config_free(c);
}

/* Reads a whole file into a NUL-terminated buffer (caller frees); NULL if unreadable. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = calloc(1, (size_t)n + 1);
        if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

/* The configuration reference names every variable of the table (and the
 * NAME_FILE form where one exists), so a new variable cannot ship undocumented. */
static void test_every_variable_documented(void)
{
    const char *path = EV_SOURCE_DIR "/docs/configuration.md";
    char *doc = slurp(path);
    char want[128];
    bool file_variant = false;
    const char *name;
    size_t missing = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
    for (size_t i = 0; (name = ev_config_var_name(i, &file_variant)) != NULL; i++) {
        snprintf(want, sizeof(want), "`%s`", name);
        if (!strstr(doc, want)) {
            fprintf(stderr, "docs/configuration.md does not document %s (add a row)\n", name);
            missing++;
        }
        snprintf(want, sizeof(want), "`%s_FILE`", name);
        if (file_variant && !strstr(doc, want)) {
            fprintf(stderr, "docs/configuration.md does not document %s_FILE\n", name);
            missing++;
        }
    }
    CU_ASSERT_EQUAL(missing, 0);
    CU_ASSERT_PTR_NOT_NULL(ev_config_var_name(0, NULL));
    free(doc);
}

/* The values that passed `migrate` and `show` and then stopped `serve`
 * without a name: now refused at load, naming the variable. */
static void test_values_serve_cannot_use(void)
{
    const char *e = load_bad("GEMINI_RPM_LIMIT", "0.001");
    CU_ASSERT_PTR_NOT_NULL(strstr(e, "GEMINI_RPM_LIMIT: '0.001' is too small"));
    e = load_bad("GROQ_RPM_LIMIT", "0.5");
    CU_ASSERT_PTR_NOT_NULL(strstr(e, "GROQ_RPM_LIMIT: '0.5' is too small"));
    e = load_bad("GEMINI_MODEL", "a/b");
    CU_ASSERT_STRING_EQUAL(e, "GEMINI_MODEL: 'a/b' is not a Gemini model name (accepted: "
                              "letters, digits, '.', '_' and '-', e.g. gemini-2.5-flash)");
    e = load_bad("GEMINI_MODELS", "gemini-2.5-flash,models:x");
    CU_ASSERT_PTR_NOT_NULL(strstr(e, "GEMINI_MODELS: 'models:x' is not a Gemini model name"));
    e = load_bad("PARSE_MEMORY_MB", "8");
    CU_ASSERT_PTR_NOT_NULL(strstr(e, "PARSE_MEMORY_MB: '8' is out of range"));
}

/*
 * Every number the table accepts, at both ends of its range, loads and
 * builds what `serve` builds from it (the pipeline: router, limiters,
 * breakers, budgets, the parse sandbox), or is refused at load with a line
 * naming a variable. Nothing accepted at load may fail later.
 */
static void test_every_accepted_value_is_usable(void)
{
    double lo, hi;
    const char *name;
    int built = 0;
    for (size_t i = 0; (name = ev_config_var_name(i, NULL)) != NULL; i++) {
        if (!ev_config_var_range(i, &lo, &hi))
            continue;
        const double ends[2] = {lo, hi};
        for (int k = 0; k < 2; k++) {
            char val[64];
            if (ends[k] == (double)(long long)ends[k])
                snprintf(val, sizeof(val), "%lld", (long long)ends[k]);
            else
                snprintf(val, sizeof(val), "%.17g", ends[k]);
            fakeenv_t e = {0};
            put(&e, "GEMINI_API_KEY", "test-key-gemini");
            put(&e, "GROQ_API_KEY", "test-key-groq");
            put(&e, name, val);
            ev_config_t *cfg = NULL;
            if (ev_config_load(&cfg, fake_get, &e, err, sizeof(err)) != 0) {
                /* Refused by a rule relating it to another variable: the
                 * line still starts with a variable's name. */
                CU_ASSERT_TRUE(err[0] >= 'A' && err[0] <= 'Z' && strchr(err, ' ') != NULL &&
                               strspn(err, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") > 3);
                if (getenv("EV_TEST_VERBOSE"))
                    fprintf(stderr, "\n  %s=%s refused: %s", name, val, err);
                continue;
            }
            ev_pipeline_t *p = NULL;
            int rc = ev_pipeline_new(&p, cfg, NULL);
            if (rc != 0)
                fprintf(stderr, "\n  %s=%s loads but serve cannot use it: %s\n", name, val,
                        ev_strerror(rc));
            CU_ASSERT_EQUAL(rc, 0);
            built += rc == 0;
            ev_pipeline_free(p);
            ev_config_free(cfg);
        }
    }
    CU_ASSERT_TRUE(built > 50);
}

static const ev_test_t config_tests[] = {
    {"values serve cannot use are refused at load", test_values_serve_cannot_use},
    {"every accepted value is usable", test_every_accepted_value_is_usable},
    {"defaults", test_defaults},
    {"overrides", test_overrides},
    {"bad numbers", test_bad_numbers},
    {"empty means default", test_empty_means_default},
    {"factors", test_factors},
    {"booleans and enums", test_booleans_and_enums},
    {"min greater than max", test_min_greater_than_max},
    {"api keys", test_keys},
    {"key files", test_key_file},
    {"log masks secrets", test_log_masks_secrets},
    {"database url from a file", test_database_url_file},
    {"every variable documented", test_every_variable_documented},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"config", NULL, NULL, config_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
