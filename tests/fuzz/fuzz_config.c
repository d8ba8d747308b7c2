/*
 * fuzz_config.c - libFuzzer target for ev_config_load() (include/ev/config.h)
 * with a getenv fed from the input.
 *
 * Input: lines "NAME=VALUE" (split at the first '='; lines without one are
 * ignored; the first line for a name wins). A *_FILE variable never reaches
 * the real file system: its value names a file of a private sandbox made on
 * first use ("key", "empty", "blank", "big", "dir"; anything else a missing
 * path), so the fuzzer cannot make the loader open a FIFO or a device.
 * The size of the input modulo 4 picks the error buffer: none, 1 byte,
 * 24 bytes or 512 bytes, allocated exactly so ASan sees any overrun.
 *
 * Checks: on success every field is inside the range of SPEC §3 and the
 * min/max pairs are ordered; on failure the result is EV_ECONFIG with *out
 * NULL and, with a full buffer, one non-empty line naming a variable the
 * loader read from the input. Single-threaded.
 */
#include "fuzz_common.h"

#include "ev/config.h"
#include "ev/error.h"

#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_MAX_VARS 64

typedef struct fuzz_env {
    char *name[FUZZ_MAX_VARS];
    char *value[FUZZ_MAX_VARS];
    int used[FUZZ_MAX_VARS];
    int n;
    char path[512]; /* the mapped *_FILE path returned last */
} fuzz_env_t;

static char fuzz_sandbox[64];

static void fuzz_sandbox_remove(void)
{
    static const char *const files[] = {"key", "empty", "blank", "big"};
    char p[128];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", fuzz_sandbox, files[i]);
        unlink(p);
    }
    snprintf(p, sizeof(p), "%s/dir", fuzz_sandbox);
    rmdir(p);
    rmdir(fuzz_sandbox);
}

static void fuzz_write(const char *name, const char *content, size_t len)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/%s", fuzz_sandbox, name);
    FILE *f = fopen(p, "w");
    if (!f || (len && fwrite(content, 1, len, f) != len) || fclose(f) != 0)
        abort();
}

/* Makes the sandbox once per process; removed at exit. */
static const char *fuzz_sandbox_dir(void)
{
    if (fuzz_sandbox[0])
        return fuzz_sandbox;
    snprintf(fuzz_sandbox, sizeof(fuzz_sandbox), "/tmp/ev-fuzz-config.XXXXXX");
    if (!mkdtemp(fuzz_sandbox))
        abort();
    fuzz_write("key", "gsk_from_file_0123\n", 19);
    fuzz_write("empty", "", 0);
    fuzz_write("blank", " \n\t\n", 4);
    static char big[5000];
    memset(big, 'k', sizeof(big));
    fuzz_write("big", big, sizeof(big));
    char p[128];
    snprintf(p, sizeof(p), "%s/dir", fuzz_sandbox);
    if (mkdir(p, 0700) != 0)
        abort();
    atexit(fuzz_sandbox_remove);
    return fuzz_sandbox;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static const char *fuzz_get(const char *name, void *ctx)
{
    fuzz_env_t *e = ctx;
    for (int i = 0; i < e->n; i++) {
        if (strcmp(e->name[i], name) != 0)
            continue;
        e->used[i] = 1;
        if (!ends_with(name, "_FILE") || e->value[i][0] == '\0')
            return e->value[i];
        static const char *const known[] = {"key", "empty", "blank", "big", "dir"};
        const char *leaf = "missing";
        for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
            if (strcmp(e->value[i], known[k]) == 0)
                leaf = known[k];
        snprintf(e->path, sizeof(e->path), "%s/%s", fuzz_sandbox_dir(), leaf);
        return e->path;
    }
    return NULL;
}

static void fuzz_env_parse(fuzz_env_t *e, const uint8_t *data, size_t size)
{
    size_t p = 0;
    while (p < size && e->n < FUZZ_MAX_VARS) {
        const uint8_t *nl = memchr(data + p, '\n', size - p);
        size_t end = nl ? (size_t)(nl - data) : size;
        const uint8_t *eq = memchr(data + p, '=', end - p);
        if (eq) {
            size_t nlen = (size_t)(eq - (data + p));
            char *name = fuzz_cstr(data + p, nlen);
            int dup = 0;
            for (int i = 0; i < e->n; i++)
                dup |= strcmp(e->name[i], name) == 0;
            if (dup || name[0] == '\0') {
                free(name);
            } else {
                e->name[e->n] = name;
                e->value[e->n] = fuzz_cstr(eq + 1, end - nlen - p - 1);
                e->n++;
            }
        }
        p = end + 1;
    }
}

static int in_range(double v, double lo, double hi)
{
    return v >= lo && v <= hi;
}

static void check_provider(const ev_provider_config_t *p, int gemini)
{
    FUZZ_CHECK(p->model && p->model[0]);
    FUZZ_CHECK(p->vision_model && p->vision_model[0]);
    FUZZ_CHECK(p->base_url &&
               (!strncmp(p->base_url, "http://", 7) || !strncmp(p->base_url, "https://", 8)));
    size_t n = strlen(p->base_url);
    FUZZ_CHECK(n > 0 && p->base_url[n - 1] != '/');
    FUZZ_CHECK(in_range(p->max_concurrent, 1, 64));
    FUZZ_CHECK(in_range(p->rpm_limit, 0, 1000000));
    FUZZ_CHECK(p->safety_factor > 0 && p->safety_factor <= 1);
    FUZZ_CHECK(in_range(p->jitter_min, 0, 10) && in_range(p->jitter_max, 0, 10));
    FUZZ_CHECK(p->jitter_min <= p->jitter_max);
    FUZZ_CHECK(p->cb_threshold > 0 && p->cb_threshold <= 1);
    FUZZ_CHECK(in_range(p->cb_window_s, 1, 86400) && in_range(p->cb_cooldown_s, 1, 86400));
    FUZZ_CHECK(in_range(p->cb_min_calls, 1, 1000000));
    FUZZ_CHECK(gemini ? in_range(p->thinking_budget, -1, 32768) : p->thinking_budget == -1);
}

static void check_config(const ev_config_t *c)
{
    FUZZ_CHECK(c->database_url && c->database_url[0]);
    FUZZ_CHECK(in_range(c->max_workers, 1, 256));
    FUZZ_CHECK(in_range(c->worker_stagger_ms, 0, 60000));
    FUZZ_CHECK(in_range(c->stagger_min_ms, 0, 600000) && in_range(c->stagger_max_ms, 0, 600000));
    FUZZ_CHECK(c->stagger_min_ms <= c->stagger_max_ms);
    FUZZ_CHECK(in_range(c->poll_interval_ms, 10, 600000));
    FUZZ_CHECK(in_range(c->lease_seconds, 5, 86400));
    FUZZ_CHECK(in_range(c->max_attempts, 1, 100));
    check_provider(&c->providers[EV_PROVIDER_GEMINI], 1);
    check_provider(&c->providers[EV_PROVIDER_GROQ], 0);
    FUZZ_CHECK(in_range(c->http_timeout_ms, 100, 600000));
    FUZZ_CHECK(in_range(c->max_retries, 0, 10));
    FUZZ_CHECK(in_range(c->retry_base_ms, 1, 600000) && in_range(c->retry_max_ms, 1, 3600000));
    FUZZ_CHECK(c->retry_base_ms <= c->retry_max_ms);
    FUZZ_CHECK(in_range(c->retry_max_wait_ms, 0, 3600000));
    FUZZ_CHECK(in_range(c->retry_budget_ratio, 0, 10));
    FUZZ_CHECK(in_range(c->max_api_calls_per_submission, 1, 1000));
    FUZZ_CHECK(c->pdf_max_bytes >= 1 && c->pdf_max_bytes <= 75000000);
    FUZZ_CHECK(in_range(c->pdf_max_pages, 1, 1000));
    FUZZ_CHECK(c->image_max_bytes >= 1 && c->image_max_bytes <= 75000000);
    FUZZ_CHECK(in_range(c->max_images, 1, 16));
    FUZZ_CHECK(!c->upload_dir || c->upload_dir[0] == '/');
    FUZZ_CHECK(c->stats_addr && c->stats_addr[0]);
    FUZZ_CHECK(in_range(c->stats_port, 0, 65535));
}

static int fuzz_config(const uint8_t *data, size_t size)
{
    fuzz_env_t e;
    memset(&e, 0, sizeof(e));
    fuzz_env_parse(&e, data, size);

    static const size_t errlens[] = {0, 1, 24, 512};
    size_t errlen = errlens[size % 4];
    char *err = errlen ? malloc(errlen) : NULL;
    if (errlen && !err)
        abort();
    if (err)
        memset(err, 'x', errlen);

    ev_config_t *cfg = (ev_config_t *)&e; /* must be overwritten */
    int rc = ev_config_load(&cfg, fuzz_get, &e, err, errlen);
    if (rc == 0) {
        FUZZ_CHECK(cfg != NULL && cfg != (ev_config_t *)&e);
        check_config(cfg);
        if (err)
            FUZZ_CHECK(err[0] == '\0');
        ev_config_free(cfg);
    } else {
        FUZZ_CHECK(rc == EV_ECONFIG);
        FUZZ_CHECK(cfg == NULL);
        if (err)
            FUZZ_CHECK(fuzz_terminated(err, errlen));
        if (errlen == 512) {
            FUZZ_CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
            int named = 0;
            for (int i = 0; i < e.n; i++)
                named |= e.used[i] && strstr(err, e.name[i]) != NULL;
            FUZZ_CHECK(named);
        }
    }
    free(err);
    for (int i = 0; i < e.n; i++) {
        free(e.name[i]);
        free(e.value[i]);
    }
    return 0;
}

#ifndef EV_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_config(data, size);
}
#endif
