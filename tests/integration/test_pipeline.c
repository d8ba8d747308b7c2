/*
 * test_pipeline.c - one submission from claim to verdict, in process, against
 * a throwaway Postgres database and the loopback provider simulator.
 *
 * Each test builds its own configuration (ev_config_load with a private
 * lookup: the sim's URLs and keys, no rate limit, tiny stagger and retry
 * delays, plus the test's overrides), stats, pipeline and worker, inserts an
 * event, a submission and its files with SQL, claims the submission with
 * ev_queue_claim and runs ev_pipeline_process on this thread. It then checks
 * what a user sees: the submission's status and last_error, each
 * validation_results row (verdict, reason, provider, model, http_attempts,
 * cached), what the sim was asked (its request counters) and the stats.
 *
 * Every table is emptied and the sim reset before each test, so tests are
 * independent. Logs go to a file in the test's temp directory, which the
 * key test reads back.
 */
#include "ev/config.h"
#include "ev/db.h"
#include "ev/error.h"
#include "ev/http.h"
#include "ev/log.h"
#include "ev/pipeline.h"
#include "ev/queue.h"
#include "ev/stats.h"
#include "ev/util.h"

#include "pgtest.h"
#include "simctl.h"

#include <CUnit/Basic.h>
#include <fcntl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>
#include "hostile.h"
#include "runner.h"

#define OWNER "e2e-owner"
#define GEMINI_MODEL "gemini-3.5-flash-lite" /* the defaults */
#define GROQ_MODEL "openai/gpt-oss-120b"
#define GROQ_VISION "qwen/qwen3.8-27b"
#define WRONG_GEMINI_KEY "wrong-gemini-key-5f2c9a"

static simctl_t *sim;
static char *db_url;
static ev_db_t *db;
static char tmp_root[64];
static char upload_dir[128];
static char log_path[128];
static int log_fd = -1;

/* ---- fixtures: file bytes ---------------------------------------------------- */

/* A valid 1x1 greyscale PNG. */
static const unsigned char png_bytes[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
    0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00,
    0x00, 0x3a, 0x7e, 0x9b, 0x55, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78,
    0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x48, 0xaf, 0xa4, 0x71, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

/* A 1x1 GIF89a: a real image, but not a type the providers accept. */
static const unsigned char gif_bytes[] = {
    'G',  'I',  'F',  '8',  '9',  'a',  0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

/* An empty ZIP archive: just the end-of-central-directory record. */
static const unsigned char zip_bytes[22] = {'P', 'K', 0x05, 0x06};

static const char html_bytes[] = "<!DOCTYPE html>\n<html><head><title>Photo</title></head>"
                                 "<body><p>Our robot, see attached.</p></body></html>\n";

/* A minimal PDF with a correct xref table and `pages` pages; page i shows
 * "<text> i" in an uncompressed content stream (so the sim sees markers). */
static char *build_pdf(size_t *len, int pages, const char *text)
{
    return ev_hostile_text_pdf(pages, text, true, NULL, len);
}

static char *read_fixture(const char *name, size_t *len)
{
    const char *dir = getenv("EV_SOURCE_DIR");
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    char *path = ev_asprintf("%s/tests/fixtures/%s", dir, name);
    FILE *fp = fopen(path, "rb");
    free(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
    ev_hbuf_t b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        ev_hbuf_add(&b, chunk, n);
    fclose(fp);
    *len = b.len;
    return b.p;
}

/* A PNG signature followed by `len` - 8 bytes of padding: libmagic and the
 * sim both call it a PNG; big enough to exceed small request limits. */
static unsigned char *big_png(size_t len)
{
    unsigned char *p = ev_calloc(1, len);
    memcpy(p, png_bytes, sizeof(png_bytes));
    return p;
}

/* ---- configuration ----------------------------------------------------------- */

typedef struct env {
    const char *kv[2 * 64];
    int n;
} env_t;

static const char *env_get(const char *name, void *ctx)
{
    const env_t *e = ctx;
    for (int i = e->n - 1; i >= 0; i--) /* the last setting wins */
        if (strcmp(e->kv[2 * i], name) == 0)
            return e->kv[2 * i + 1];
    return NULL;
}

static void env_set(env_t *e, const char *name, const char *value)
{
    CU_ASSERT_FATAL(e->n < 64);
    e->kv[2 * e->n] = name;
    e->kv[2 * e->n + 1] = value;
    e->n++;
}

/* Everything one test needs to process submissions. */
typedef struct fx {
    ev_config_t *cfg;
    ev_stats_t *stats;
    ev_pipeline_t *pipe;
    ev_pipeline_worker_t *w;
} fx_t;

/* Empties every table and resets the sim. */
static void clean_slate(void)
{
    /* CASCADE: later migrations add tables that reference submissions and events. */
    CU_ASSERT_EQUAL_FATAL(ev_db_exec_script(db, "TRUNCATE validation_results, submission_files, "
                                                "submissions, events, verdict_cache CASCADE"),
                          0);
    CU_ASSERT_EQUAL_FATAL(simctl_reset(sim), 0);
}

/* `overrides`: NULL-terminated NAME, VALUE pairs over the test defaults.
 * Keeps the database and the sim as they are. */
static void fx_open(fx_t *f, const char *const *overrides)
{
    memset(f, 0, sizeof(*f));
    env_t e = {.n = 0};
    env_set(&e, "GEMINI_API_KEY", SIMCTL_GEMINI_KEY);
    env_set(&e, "GEMINI_BASE_URL", simctl_gemini_url(sim));
    env_set(&e, "GROQ_API_KEY", SIMCTL_GROQ_KEY);
    env_set(&e, "GROQ_BASE_URL", simctl_groq_url(sim));
    env_set(&e, "GEMINI_RPM_LIMIT", "0");
    env_set(&e, "GROQ_RPM_LIMIT", "0");
    env_set(&e, "STAGGER_MIN_MS", "0");
    env_set(&e, "STAGGER_MAX_MS", "5");
    env_set(&e, "RETRY_BASE_MS", "10");
    env_set(&e, "RETRY_MAX_MS", "50");
    env_set(&e, "REQUEUE_BASE_MS", "10");
    env_set(&e, "REQUEUE_MAX_MS", "50");
    env_set(&e, "HTTP_TIMEOUT_MS", "10000");
    env_set(&e, "UPLOAD_DIR", upload_dir);
    for (const char *const *o = overrides; o && *o; o += 2)
        env_set(&e, o[0], o[1]);
    char err[256] = "";
    int rc = ev_config_load(&f->cfg, env_get, &e, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "\n  config: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    ev_stats_options_t so = EV_STATS_OPTIONS_INIT;
    so.workers_configured = 1;
    so.budget_limit = f->cfg->max_api_calls_per_submission;
    CU_ASSERT_EQUAL_FATAL(ev_stats_new(&f->stats, &so), 0);
    CU_ASSERT_EQUAL_FATAL(ev_pipeline_new(&f->pipe, f->cfg, f->stats), 0);
    CU_ASSERT_EQUAL_FATAL(ev_pipeline_worker_new(&f->w, f->pipe, 0), 0);
}

/* A fresh start: empty tables, a reset sim, then fx_open. */
static void fx_start(fx_t *f, const char *const *overrides)
{
    clean_slate();
    fx_open(f, overrides);
}

static void fx_stop(fx_t *f)
{
    ev_pipeline_worker_free(f->w);
    ev_pipeline_free(f->pipe);
    ev_stats_free(f->stats);
    ev_config_free(f->cfg);
}

/* ---- database helpers -------------------------------------------------------- */

static int64_t insert_id(const char *sql, int n, const char *const *params)
{
    PGresult *r = NULL;
    int rc = ev_db_exec(db, &r, sql, n, params);
    if (rc != 0)
        fprintf(stderr, "\n  insert: %s\n", ev_db_error(db));
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    int64_t id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return id;
}

static int64_t add_event(const char *name, bool require_pdf, bool require_image)
{
    const char *p[] = {name, "Robots that help in the kitchen",
                       "Original work only; no commercial products.",
                       require_pdf ? "true" : "false", require_image ? "true" : "false"};
    return insert_id("INSERT INTO events (name, theme, rules, require_pdf, require_image) "
                     "VALUES ($1, $2, $3, $4::boolean, $5::boolean) RETURNING id",
                     5, p);
}

static int64_t add_submission(int64_t event, const char *title, const char *description)
{
    char ev[32];
    snprintf(ev, sizeof(ev), "%lld", (long long)event);
    const char *p[] = {ev, title, description};
    return insert_id("INSERT INTO submissions (event_id, title, description) VALUES ($1, $2, $3) "
                     "RETURNING id",
                     3, p);
}

static void add_file(int64_t sub, const char *kind, const char *filename, const void *data,
                     size_t len)
{
    static const char hexd[] = "0123456789abcdef";
    char *hex = ev_malloc(2 * len + 1);
    const unsigned char *d = data;
    for (size_t i = 0; i < len; i++) {
        hex[2 * i] = hexd[d[i] >> 4];
        hex[2 * i + 1] = hexd[d[i] & 15];
    }
    hex[2 * len] = '\0';
    char id[32];
    snprintf(id, sizeof(id), "%lld", (long long)sub);
    const char *p[] = {id, kind, filename, hex};
    int64_t fid = insert_id("INSERT INTO submission_files (submission_id, kind, filename, content) "
                            "VALUES ($1, $2, $3, decode($4, 'hex')) RETURNING id",
                            4, p);
    CU_ASSERT(fid > 0);
    free(hex);
}

static void add_path(int64_t sub, const char *kind, const char *filename, const char *path)
{
    char id[32];
    snprintf(id, sizeof(id), "%lld", (long long)sub);
    const char *p[] = {id, kind, filename, path};
    int64_t fid = insert_id("INSERT INTO submission_files (submission_id, kind, filename, "
                            "storage_path) VALUES ($1, $2, $3, $4) RETURNING id",
                            4, p);
    CU_ASSERT(fid > 0);
}

static void sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sql(const char *fmt, ...)
{
    char q[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof(q), fmt, ap);
    va_end(ap);
    int rc = ev_db_exec_script(db, q);
    if (rc != 0)
        fprintf(stderr, "\n  sql: %s\n", ev_db_error(db));
    CU_ASSERT_EQUAL_FATAL(rc, 0);
}

static int64_t query_i64(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int64_t query_i64(const char *fmt, ...)
{
    char q[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof(q), fmt, ap);
    va_end(ap);
    int64_t v = -1;
    CU_ASSERT_EQUAL_FATAL(ev_pgtest_db_i64(db, q, &v), 0);
    return v;
}

/* One validation_results row as a user reads it. */
typedef struct result {
    bool found;
    char verdict[16];
    char reason[1200];
    char provider[16]; /* "" for NULL */
    char model[128];   /* "" for NULL */
    int http_attempts;
    bool cached;
    int calls; /* entries of the calls history */
    char created_at[64];
} result_t;

static result_t result(int64_t sub, const char *check)
{
    result_t out;
    memset(&out, 0, sizeof(out));
    char id[32];
    snprintf(id, sizeof(id), "%lld", (long long)sub);
    const char *p[] = {id, check};
    PGresult *r = NULL;
    int rc = ev_db_exec(db, &r,
                        "SELECT verdict, coalesce(reason, ''), coalesce(provider, ''), "
                        "coalesce(model, ''), http_attempts, cached, "
                        "coalesce(jsonb_array_length(calls), -1), created_at::text "
                        "FROM validation_results WHERE submission_id = $1 AND check_name = $2",
                        2, p);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    if (PQntuples(r) == 1) {
        out.found = true;
        snprintf(out.verdict, sizeof(out.verdict), "%s", PQgetvalue(r, 0, 0));
        snprintf(out.reason, sizeof(out.reason), "%s", PQgetvalue(r, 0, 1));
        snprintf(out.provider, sizeof(out.provider), "%s", PQgetvalue(r, 0, 2));
        snprintf(out.model, sizeof(out.model), "%s", PQgetvalue(r, 0, 3));
        out.http_attempts = (int)strtol(PQgetvalue(r, 0, 4), NULL, 10);
        out.cached = PQgetvalue(r, 0, 5)[0] == 't';
        out.calls = (int)strtol(PQgetvalue(r, 0, 6), NULL, 10);
        snprintf(out.created_at, sizeof(out.created_at), "%s", PQgetvalue(r, 0, 7));
    }
    PQclear(r);
    return out;
}

/* The submission row as a user reads it. */
typedef struct subrow {
    char status[16];
    char last_error[2100];
    int attempts;
    bool backed_off; /* run_after later than the last update */
    char lease_owner[96];
} subrow_t;

static subrow_t submission(int64_t sub)
{
    subrow_t out;
    memset(&out, 0, sizeof(out));
    char id[32];
    snprintf(id, sizeof(id), "%lld", (long long)sub);
    const char *p[] = {id};
    PGresult *r = NULL;
    int rc =
        ev_db_exec(db, &r,
                   "SELECT status, coalesce(last_error, ''), attempts, run_after > updated_at, "
                   "coalesce(lease_owner, '') FROM submissions WHERE id = $1",
                   1, p);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL_FATAL(PQntuples(r), 1);
    snprintf(out.status, sizeof(out.status), "%s", PQgetvalue(r, 0, 0));
    snprintf(out.last_error, sizeof(out.last_error), "%s", PQgetvalue(r, 0, 1));
    out.attempts = (int)strtol(PQgetvalue(r, 0, 2), NULL, 10);
    out.backed_off = PQgetvalue(r, 0, 3)[0] == 't';
    snprintf(out.lease_owner, sizeof(out.lease_owner), "%s", PQgetvalue(r, 0, 4));
    PQclear(r);
    return out;
}

static int64_t result_rows(int64_t sub)
{
    return query_i64("SELECT count(*) FROM validation_results WHERE submission_id = %lld",
                     (long long)sub);
}

/* Claims the next runnable submission, which must be `sub`, and processes
 * it. *job_out (may be NULL) receives the claim. */
static int process(fx_t *f, int64_t sub, const atomic_bool *stop, ev_job_t *job_out)
{
    ev_job_t job;
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, OWNER, &job), 0);
    CU_ASSERT_EQUAL_FATAL(job.submission_id, sub);
    if (job_out)
        *job_out = job;
    return ev_pipeline_process(f->w, db, &job, stop);
}

/* Makes a requeued submission runnable now (the backoff has been checked). */
static void run_now(int64_t sub)
{
    sql("UPDATE submissions SET run_after = now() WHERE id = %lld", (long long)sub);
}

/* ---- sim and stats helpers --------------------------------------------------- */

static int64_t requests(const char *provider)
{
    return simctl_counter(sim, provider, "requests");
}

static void sim_set(const char *provider, const char *json)
{
    CU_ASSERT_EQUAL_FATAL(simctl_set(sim, provider, json), 0);
}

/* The stats document value at a dotted path ("providers.gemini.breaker"). */
static json_object *stats_at(json_object *root, const char *path)
{
    json_object *o = root;
    const char *s = path;
    while (o && *s) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        char key[64];
        snprintf(key, sizeof(key), "%.*s", (int)n, s);
        json_object *next = NULL;
        if (!json_object_object_get_ex(o, key, &next))
            return NULL;
        o = next;
        s = dot ? dot + 1 : s + n;
    }
    return o;
}

static json_object *stats_json(fx_t *f)
{
    json_object *o = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_stats_snapshot_json(&o, f->stats, NULL), 0);
    return o;
}

static int64_t stat_i64(fx_t *f, const char *path)
{
    json_object *root = stats_json(f);
    json_object *v = stats_at(root, path);
    int64_t n = v ? json_object_get_int64(v) : -1;
    json_object_put(root);
    return n;
}

static bool stat_bool(fx_t *f, const char *path)
{
    json_object *root = stats_json(f);
    json_object *v = stats_at(root, path);
    bool b = v && json_object_get_boolean(v);
    json_object_put(root);
    return b;
}

/* Compares a stats string; prints the difference. */
static bool stat_str_is(fx_t *f, const char *path, const char *want)
{
    json_object *root = stats_json(f);
    json_object *v = stats_at(root, path);
    const char *got = v ? json_object_get_string(v) : "(missing)";
    bool ok = strcmp(got, want) == 0;
    if (!ok)
        fprintf(stderr, "\n  stats %s: got \"%s\", expected \"%s\"\n", path, got, want);
    json_object_put(root);
    return ok;
}

static bool contains(const char *hay, const char *needle)
{
    bool ok = strstr(hay, needle) != NULL;
    if (!ok)
        fprintf(stderr, "\n  \"%s\" does not contain \"%s\"\n", hay, needle);
    return ok;
}

static bool equals(const char *got, const char *want)
{
    bool ok = strcmp(got, want) == 0;
    if (!ok)
        fprintf(stderr, "\n  got \"%s\", expected \"%s\"\n", got, want);
    return ok;
}

/* A row answered by a model: verdict, provider, model, attempts. */
static void assert_answered(int64_t sub, const char *check, const char *verdict,
                            const char *provider, const char *model, int http_attempts)
{
    result_t r = result(sub, check);
    CU_ASSERT_TRUE_FATAL(r.found);
    CU_ASSERT_TRUE(equals(r.verdict, verdict));
    CU_ASSERT_TRUE(equals(r.provider, provider));
    CU_ASSERT_TRUE(equals(r.model, model));
    CU_ASSERT_EQUAL(r.http_attempts, http_attempts);
    CU_ASSERT_EQUAL(r.calls, http_attempts);
    CU_ASSERT_FALSE(r.cached);
    CU_ASSERT(strlen(r.reason) > 0);
}

/* A row decided without a model: verdict and reason, no provider, no call. */
static void assert_local(int64_t sub, const char *check, const char *verdict)
{
    result_t r = result(sub, check);
    CU_ASSERT_TRUE_FATAL(r.found);
    CU_ASSERT_TRUE(equals(r.verdict, verdict));
    CU_ASSERT_TRUE(equals(r.provider, ""));
    CU_ASSERT_EQUAL(r.http_attempts, 0);
    CU_ASSERT_FALSE(r.cached);
    CU_ASSERT(strlen(r.reason) > 0);
}

/* A typical submission: a one-page PDF with text and one PNG. */
/* A submission whose PDF text names `pdf_title`: the same pdf_title gives
 * byte-identical PDFs (a re-upload), another one a different document. */
static int64_t submission_with_pdf(int64_t event, const char *title, const char *description,
                                   const char *pdf_title)
{
    int64_t sub = add_submission(event, title, description);
    size_t len = 0;
    char text[200];
    snprintf(text, sizeof(text), "Our robot arm stirs soup safely: %s", pdf_title);
    char *pdf = build_pdf(&len, 1, text);
    add_file(sub, "pdf", "slides.pdf", pdf, len);
    free(pdf);
    add_file(sub, "image", "robot.png", png_bytes, sizeof(png_bytes));
    return sub;
}

static int64_t good_submission(int64_t event, const char *title, const char *description)
{
    return submission_with_pdf(event, title, description, title);
}

/* ---- happy path and model verdicts -------------------------------------------- */

static void test_good_submission(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = good_submission(ev, "Soup stirring robot", "A robot arm that stirs soup.");

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    subrow_t s = submission(sub);
    CU_ASSERT_TRUE(equals(s.status, "validated"));
    CU_ASSERT_TRUE(equals(s.last_error, ""));
    CU_ASSERT_TRUE(equals(s.lease_owner, ""));
    CU_ASSERT_EQUAL(s.attempts, 1);
    assert_answered(sub, "theme", "pass", "gemini", GEMINI_MODEL, 1);
    assert_answered(sub, "pdf", "pass", "gemini", GEMINI_MODEL, 1);
    assert_answered(sub, "image", "pass", "gemini", GEMINI_MODEL, 1);
    CU_ASSERT_EQUAL(requests("gemini"), 3);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "malformed"), 0);
    CU_ASSERT_EQUAL(requests("groq"), 0);
    CU_ASSERT_EQUAL(stat_i64(&f, "submissions.by_status.validated"), 1);
    CU_ASSERT_EQUAL(stat_i64(&f, "providers.gemini.calls"), 3);
    CU_ASSERT_EQUAL(stat_i64(&f, "workers.busy"), 0);
    fx_stop(&f);
}

static void test_offtopic_rejected(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", false, false);
    int64_t sub = good_submission(ev, "Travel diary", "OFFTOPIC: our holiday photos from Rome.");

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    subrow_t s = submission(sub);
    CU_ASSERT_TRUE(equals(s.status, "rejected"));
    result_t theme = result(sub, "theme");
    CU_ASSERT_TRUE(equals(theme.verdict, "fail"));
    CU_ASSERT_TRUE(contains(theme.reason, "OFFTOPIC"));
    CU_ASSERT_TRUE(equals(theme.provider, "gemini"));
    CU_ASSERT_TRUE(contains(s.last_error, "theme: "));
    CU_ASSERT_TRUE(contains(s.last_error, "OFFTOPIC"));
    /* The PDF itself is on topic. */
    CU_ASSERT_TRUE(equals(result(sub, "pdf").verdict, "pass"));
    fx_stop(&f);
}

/* ---- local checks: no API call --------------------------------------------------- */

/* Processes `sub` and expects a rejection by `check` with `reason` (a prefix
 * when `prefix`), the other checks skipped and no request to either provider. */
static void expect_local_fail(fx_t *f, int64_t sub, const char *check, const char *reason,
                              bool prefix)
{
    CU_ASSERT_EQUAL(process(f, sub, NULL, NULL), 0);
    subrow_t s = submission(sub);
    CU_ASSERT_TRUE(equals(s.status, "rejected"));
    result_t r = result(sub, check);
    CU_ASSERT_TRUE_FATAL(r.found);
    CU_ASSERT_TRUE(equals(r.verdict, "fail"));
    if (prefix) {
        CU_ASSERT_TRUE(strncmp(r.reason, reason, strlen(reason)) == 0 || equals(r.reason, reason));
    } else {
        CU_ASSERT_TRUE(equals(r.reason, reason));
    }
    CU_ASSERT_TRUE(equals(r.provider, ""));
    CU_ASSERT_EQUAL(r.http_attempts, 0);
    char want[1300];
    snprintf(want, sizeof(want), "%s: %s", check, r.reason);
    CU_ASSERT_TRUE(equals(s.last_error, want));
    const char *checks[] = {"theme", "pdf", "image"};
    for (int i = 0; i < 3; i++) {
        if (strcmp(checks[i], check) != 0)
            assert_local(sub, checks[i], "skipped");
    }
    CU_ASSERT_EQUAL(requests("gemini"), 0);
    CU_ASSERT_EQUAL(requests("groq"), 0);
}

static void test_zip_named_pdf(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    add_file(sub, "pdf", "slides.pdf", zip_bytes, sizeof(zip_bytes));
    add_file(sub, "image", "robot.png", png_bytes, sizeof(png_bytes));
    expect_local_fail(&f, sub, "pdf", "declared PDF is a ZIP archive", false);
    result_t theme = result(sub, "theme");
    CU_ASSERT_TRUE(contains(theme.reason, "local file check"));
    fx_stop(&f);
}

static void test_html_named_png(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", false, true);
    int64_t sub = add_submission(ev, "Soup robot", NULL);
    add_file(sub, "image", "photo.png", html_bytes, sizeof(html_bytes) - 1);
    expect_local_fail(&f, sub, "image", "image 'photo.png' is an HTML document, not an image",
                      false);
    fx_stop(&f);
}

static void test_gif_refused(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", false, true);
    int64_t sub = add_submission(ev, "Soup robot", NULL);
    add_file(sub, "image", "anim.gif", gif_bytes, sizeof(gif_bytes));
    expect_local_fail(
        &f, sub, "image",
        "image 'anim.gif': type image/gif is not accepted (png, jpeg, webp, heic, heif)", false);
    fx_stop(&f);
}

static void test_encrypted_pdf(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", true, false);
    int64_t sub = add_submission(ev, "Soup robot", NULL);
    size_t len = 0;
    char *pdf = read_fixture("encrypted.pdf", &len);
    add_file(sub, "pdf", "locked.pdf", pdf, len);
    free(pdf);
    expect_local_fail(&f, sub, "pdf", "PDF is encrypted (password protected)", false);
    fx_stop(&f);
}

static void test_truncated_pdf(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", true, false);
    int64_t sub = add_submission(ev, "Soup robot", NULL);
    size_t len = 0;
    char *pdf = build_pdf(&len, 2, "Our robot arm stirs soup safely");
    add_file(sub, "pdf", "cut.pdf", pdf, len / 2);
    free(pdf);
    expect_local_fail(&f, sub, "pdf", "PDF is damaged or truncated: ", true);
    fx_stop(&f);
}

static void test_pdf_too_many_pages(void)
{
    fx_t f;
    const char *o[] = {"PDF_MAX_PAGES", "2", NULL};
    fx_start(&f, o);
    int64_t ev = add_event("kitchen", true, false);
    int64_t sub = add_submission(ev, "Soup robot", NULL);
    size_t len = 0;
    char *pdf = build_pdf(&len, 3, "Our robot arm stirs soup safely");
    add_file(sub, "pdf", "long.pdf", pdf, len);
    free(pdf);
    expect_local_fail(&f, sub, "pdf", "PDF has 3 pages, limit is 2", false);
    fx_stop(&f);
}

/* A decompression bomb costs the worker one CPU budget, no API call, and
 * shows in the parse counters; an honest PDF of the same size still passes. */
static void test_pdf_bomb_fails_locally(void)
{
    fx_t f;
    const char *o[] = {"PARSE_CPU_MS", "500", NULL};
    fx_start(&f, o);
    int64_t ev = add_event("kitchen", true, false);
    int64_t sub = add_submission(ev, "Soup robot", NULL);
    ev_hostile_params_t p = {.mib = 400};
    size_t len = 0;
    char *pdf = ev_hostile_pdf(EV_HOSTILE_TEXT_BOMB, &p, &len);
    add_file(sub, "pdf", "bomb.pdf", pdf, len);
    free(pdf);
    expect_local_fail(&f, sub, "pdf",
                      "PDF needs more than 0.5 s of processing; it may be malformed or built to "
                      "exhaust the validator",
                      false);
    CU_ASSERT_EQUAL(stat_i64(&f, "parse.count"), 1);
    CU_ASSERT_EQUAL(stat_i64(&f, "parse.limit_kills"), 1);

    ev_hostile_params_t h = {.pages = 3, .pad = len};
    char *honest = ev_hostile_pdf(EV_HOSTILE_HONEST, &h, &len);
    int64_t ok = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    add_file(ok, "pdf", "slides.pdf", honest, len);
    free(honest);
    CU_ASSERT_EQUAL(process(&f, ok, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(ok).status, "validated"));
    CU_ASSERT_EQUAL(stat_i64(&f, "parse.limit_kills"), 1);
    fx_stop(&f);
}

/* Images that together exceed every provider's request are judged in as
 * many requests as needed; an image no request can carry fails locally. */
static void test_images_over_several_requests(void)
{
    fx_t f;
    /* Only Groq, whose requests are capped at 1 MiB here: 300 KB images
     * (400 KB as base64) go one per request. */
    const char *o[] = {"GEMINI_API_KEY", "", "GROQ_MAX_REQUEST_BYTES", "1M", NULL};
    fx_start(&f, o);
    int64_t ev = add_event("kitchen", false, true);
    int64_t sub = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    unsigned char *img = big_png(300 * 1000);
    add_file(sub, "image", "a.png", img, 300 * 1000);
    add_file(sub, "image", "b.png", img, 300 * 1000);
    add_file(sub, "image", "c.png", img, 300 * 1000);
    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "validated"));
    result_t r = result(sub, "image");
    CU_ASSERT_TRUE(equals(r.verdict, "pass"));
    CU_ASSERT_TRUE(contains(r.reason, "3 images judged in 3 requests"));
    CU_ASSERT_EQUAL(r.http_attempts, 3);
    CU_ASSERT_EQUAL(requests("groq"), 4); /* theme + three image parts */
    CU_ASSERT_EQUAL(requests("gemini"), 0);

    /* 700 KB is 933 KB as base64: no request of this configuration carries it. */
    int64_t big = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    unsigned char *huge = big_png(700 * 1000);
    add_file(big, "image", "huge.png", huge, 700 * 1000);
    CU_ASSERT_EQUAL(process(&f, big, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(big).status, "rejected"));
    r = result(big, "image");
    CU_ASSERT_TRUE(equals(r.verdict, "fail"));
    CU_ASSERT_TRUE(contains(r.reason, "image 'huge.png' is 683.6 KiB; the configured providers "
                                      "take at most"));
    CU_ASSERT_EQUAL(r.http_attempts, 0);
    CU_ASSERT_EQUAL(requests("groq"), 4);
    free(huge);
    fx_stop(&f);

    /* IMAGE_SPLIT_REQUESTS=false: the same three images fail locally, no call. */
    const char *o2[] = {
        "GEMINI_API_KEY", "",  "GROQ_MAX_REQUEST_BYTES", "1M", "IMAGE_SPLIT_REQUESTS",
        "false",          NULL};
    fx_start(&f, o2);
    ev = add_event("kitchen", false, true);
    sub = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    add_file(sub, "image", "a.png", img, 300 * 1000);
    add_file(sub, "image", "b.png", img, 300 * 1000);
    add_file(sub, "image", "c.png", img, 300 * 1000);
    expect_local_fail(&f, sub, "image", "3 images total 878.9 KiB; at most ", true);
    free(img);
    fx_stop(&f);
}

/* A 1000 x 800 HEIC header (ftyp heic + an ispe box): Gemini takes HEIC, the
 * OpenAI-shaped providers do not. */
static const unsigned char heic_ispe[] = {
    /* ftyp, 24 bytes: brand heic */
    0x00, 0x00, 0x00, 0x18, 'f', 't', 'y', 'p', 'h', 'e', 'i', 'c', 0x00, 0x00, 0x00, 0x00, 'm',
    'i', 'f', '1', 'h', 'e', 'i', 'c',
    /* meta (full box) > iprp > ipco > ispe 1000 x 800 */
    0x00, 0x00, 0x00, 0x30, 'm', 'e', 't', 'a', 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 'i',
    'p', 'r', 'p', 0x00, 0x00, 0x00, 0x1c, 'i', 'p', 'c', 'o', 0x00, 0x00, 0x00, 0x14, 'i', 's',
    'p', 'e', 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x03, 0x20};

/* An image type no configured provider accepts can never be judged: with
 * only Groq configured a HEIC image fails locally, naming why, and costs no
 * call; with Gemini configured the same image is sent to Gemini alone. */
static void test_image_type_no_provider_accepts(void)
{
    fx_t f;
    const char *o[] = {"GEMINI_API_KEY", "", NULL};
    fx_start(&f, o);
    int64_t ev = add_event("kitchen", false, true);
    int64_t sub = add_submission(ev, "Soup robot", NULL);
    add_file(sub, "image", "robot.heic", heic_ispe, sizeof(heic_ispe));
    expect_local_fail(&f, sub, "image",
                      "image 'robot.heic' is a HEIC image, which none of the configured "
                      "providers accepts",
                      false);
    fx_stop(&f);

    fx_start(&f, NULL);
    ev = add_event("kitchen", false, true);
    sub = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    add_file(sub, "image", "robot.heic", heic_ispe, sizeof(heic_ispe));
    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    result_t r = result(sub, "image");
    CU_ASSERT_TRUE(equals(r.verdict, "pass"));
    CU_ASSERT_TRUE(equals(r.provider, "gemini"));
    fx_stop(&f);
}

static void test_image_too_big_on_disk(void)
{
    fx_t f;
    fx_start(&f, NULL);
    /* A sparse 5 MiB "PNG" beneath UPLOAD_DIR: refused by its size alone. */
    char *path = ev_asprintf("%s/huge.png", upload_dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, png_bytes, sizeof(png_bytes)), (ssize_t)sizeof(png_bytes));
    CU_ASSERT_EQUAL(ftruncate(fd, 5 * 1024 * 1024), 0);
    close(fd);
    int64_t ev = add_event("kitchen", false, true);
    int64_t sub = add_submission(ev, "Soup robot", NULL);
    add_path(sub, "image", "huge.png", "huge.png");
    expect_local_fail(&f, sub, "image", "image 'huge.png' is 5.0 MiB, limit is 4 MiB", false);
    unlink(path);
    free(path);
    fx_stop(&f);
}

static void test_too_many_images(void)
{
    fx_t f;
    const char *o[] = {"MAX_IMAGES", "2", NULL};
    fx_start(&f, o);
    int64_t ev = add_event("kitchen", false, true);
    int64_t sub = add_submission(ev, "Soup robot", NULL);
    for (int i = 0; i < 3; i++)
        add_file(sub, "image", "robot.png", png_bytes, sizeof(png_bytes));
    expect_local_fail(&f, sub, "image", "3 images, limit is 2", false);
    fx_stop(&f);
}

/* Watches a file for any open or read. */
static int watch_file(const char *path)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(inotify_add_watch(fd, path, IN_OPEN | IN_ACCESS) >= 0);
    return fd;
}

/* True when the watched file was opened or read since the last call. */
static bool was_opened(int ifd)
{
    char ev[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool any = false;
    while (read(ifd, ev, sizeof(ev)) > 0)
        any = true;
    return any;
}

static void test_storage_path_traversal(void)
{
    fx_t f;
    fx_start(&f, NULL);
    /* Targets outside UPLOAD_DIR that must never be opened: <root>/etc/passwd
     * (what "../etc/passwd" names from <root>/uploads) and <root>/outside. */
    char *etc = ev_asprintf("%s/etc", tmp_root);
    char *passwd = ev_asprintf("%s/etc/passwd", tmp_root);
    char *outside = ev_asprintf("%s/outside.png", tmp_root);
    char *link = ev_asprintf("%s/escape.png", upload_dir);
    CU_ASSERT_EQUAL_FATAL(mkdir(etc, 0755), 0);
    const char *targets[] = {passwd, outside};
    for (int i = 0; i < 2; i++) {
        FILE *fp = fopen(targets[i], "wb");
        CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
        fwrite(png_bytes, 1, sizeof(png_bytes), fp);
        fclose(fp);
    }
    CU_ASSERT_EQUAL_FATAL(symlink("../outside.png", link), 0);
    int w_passwd = watch_file(passwd), w_outside = watch_file(outside);

    int64_t ev = add_event("kitchen", false, true);
    const char *paths[] = {"../etc/passwd", outside, "escape.png"};
    for (int i = 0; i < 3; i++) {
        int64_t sub = add_submission(ev, "Soup robot", NULL);
        add_path(sub, "image", "robot.png", paths[i]);
        CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
        subrow_t s = submission(sub);
        CU_ASSERT_TRUE(equals(s.status, "rejected"));
        result_t r = result(sub, "image");
        CU_ASSERT_TRUE(equals(r.verdict, "fail"));
        CU_ASSERT_TRUE(contains(r.reason, "storage path '"));
        CU_ASSERT_TRUE(contains(r.reason, "' refused"));
        assert_local(sub, "theme", "skipped");
    }
    CU_ASSERT_FALSE(was_opened(w_passwd));
    CU_ASSERT_FALSE(was_opened(w_outside));
    CU_ASSERT_EQUAL(requests("gemini") + requests("groq"), 0);

    /* The watches do see an open: the assertions above mean something. */
    FILE *fp = fopen(outside, "rb");
    CU_ASSERT_PTR_NOT_NULL(fp);
    if (fp)
        fclose(fp);
    CU_ASSERT_TRUE(was_opened(w_outside));

    close(w_passwd);
    close(w_outside);
    unlink(link);
    unlink(outside);
    unlink(passwd);
    rmdir(etc);
    free(link);
    free(outside);
    free(passwd);
    free(etc);
    fx_stop(&f);
}

static void test_missing_pdf(void)
{
    fx_t f;
    fx_start(&f, NULL);

    /* Required: a local fail, nothing asked. */
    int64_t strict = add_event("strict", true, false);
    int64_t sub = add_submission(strict, "Soup robot", "A robot arm that stirs soup.");
    add_file(sub, "image", "robot.png", png_bytes, sizeof(png_bytes));
    expect_local_fail(&f, sub, "pdf", "a PDF is required for this event but none was attached",
                      false);

    /* Optional: skipped, and the rest is judged. */
    int64_t relaxed = add_event("relaxed", false, false);
    sub = add_submission(relaxed, "Soup robot", "A robot arm that stirs soup.");
    add_file(sub, "image", "robot.png", png_bytes, sizeof(png_bytes));
    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "validated"));
    assert_local(sub, "pdf", "skipped");
    assert_answered(sub, "theme", "pass", "gemini", GEMINI_MODEL, 1);
    assert_answered(sub, "image", "pass", "gemini", GEMINI_MODEL, 1);
    CU_ASSERT_EQUAL(requests("gemini"), 2);
    fx_stop(&f);
}

/* ---- budget, fallback, retries ----------------------------------------------------- */

static void test_budget_exhausted(void)
{
    fx_t f;
    const char *o[] = {"MAX_API_CALLS_PER_SUBMISSION", "1", NULL};
    fx_start(&f, o);
    int64_t ev = add_event("kitchen", false, false);
    int64_t sub = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    add_file(sub, "image", "robot.png", png_bytes, sizeof(png_bytes));

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    subrow_t s = submission(sub);
    CU_ASSERT_TRUE(equals(s.status, "pending"));
    CU_ASSERT_TRUE(s.backed_off);
    CU_ASSERT_EQUAL(s.attempts, 1);
    CU_ASSERT_TRUE(contains(s.last_error, "image: "));
    CU_ASSERT_TRUE(contains(s.last_error, "budget"));
    assert_answered(sub, "theme", "pass", "gemini", GEMINI_MODEL, 1);
    result_t img = result(sub, "image");
    CU_ASSERT_TRUE(equals(img.verdict, "error"));
    CU_ASSERT_TRUE(contains(img.reason, "budget of 1"));
    CU_ASSERT_EQUAL(img.http_attempts, 0);
    CU_ASSERT_EQUAL(requests("gemini"), 1);
    CU_ASSERT_EQUAL(stat_i64(&f, "budget.exhausted"), 1);
    CU_ASSERT_EQUAL(stat_i64(&f, "submissions.by_status.requeued"), 1);

    /* The next attempt has a fresh budget and asks only what is missing. */
    run_now(sub);
    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "validated"));
    assert_answered(sub, "image", "pass", "gemini", GEMINI_MODEL, 1);
    assert_answered(sub, "theme", "pass", "gemini", GEMINI_MODEL, 1);
    CU_ASSERT_EQUAL(requests("gemini"), 2);
    CU_ASSERT_EQUAL(stat_i64(&f, "budget.exhausted"), 1);
    fx_stop(&f);
}

static void test_fallback_to_groq(void)
{
    fx_t f;
    const char *o[] = {"MAX_RETRIES", "1", "MAX_API_CALLS_PER_SUBMISSION", "20", NULL};
    fx_start(&f, o);
    sim_set("gemini", "{\"fault\": \"overloaded\"}");
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "validated"));
    /* Two Gemini attempts (one retry), then Groq, for each check. */
    assert_answered(sub, "theme", "pass", "groq", GROQ_MODEL, 3);
    assert_answered(sub, "pdf", "pass", "groq", GROQ_MODEL, 3);
    assert_answered(sub, "image", "pass", "groq", GROQ_VISION, 3);
    CU_ASSERT_EQUAL(requests("gemini"), 6);
    CU_ASSERT_EQUAL(requests("groq"), 3);
    /* Groq never got a PDF (it would have refused it as malformed). */
    CU_ASSERT_EQUAL(simctl_counter(sim, "groq", "malformed"), 0);
    CU_ASSERT_EQUAL(stat_i64(&f, "fallbacks"), 3);
    CU_ASSERT_EQUAL(stat_i64(&f, "providers.gemini.retries"), 3);
    fx_stop(&f);
}

static void test_groq_pdf_check_reads_text(void)
{
    fx_t f;
    const char *o[] = {"MAX_RETRIES", "0", NULL};
    fx_start(&f, o);
    sim_set("gemini", "{\"fault\": \"overloaded\"}");
    int64_t ev = add_event("kitchen", true, false);
    int64_t sub = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    size_t len = 0;
    char *pdf = build_pdf(&len, 1, "BADPDF lorem ipsum placeholder");
    add_file(sub, "pdf", "slides.pdf", pdf, len);
    free(pdf);

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    /* Groq saw the marker in the extracted text it was sent. */
    result_t r = result(sub, "pdf");
    CU_ASSERT_TRUE(equals(r.verdict, "fail"));
    CU_ASSERT_TRUE(equals(r.provider, "groq"));
    CU_ASSERT_TRUE(contains(r.reason, "BADPDF"));
    CU_ASSERT_TRUE(equals(submission(sub).status, "rejected"));
    CU_ASSERT_EQUAL(simctl_counter(sim, "groq", "malformed"), 0);
    fx_stop(&f);
}

static void test_outage_then_recovery(void)
{
    fx_t f;
    const char *o[] = {"MAX_RETRIES", "0", "MAX_API_CALLS_PER_SUBMISSION", "10", NULL};
    fx_start(&f, o);
    sim_set("gemini", "{\"fault\": \"overloaded\"}");
    sim_set("groq", "{\"fault\": \"overloaded\"}");
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    subrow_t s = submission(sub);
    CU_ASSERT_TRUE(equals(s.status, "pending"));
    CU_ASSERT_TRUE(s.backed_off);
    CU_ASSERT_EQUAL(s.attempts, 1);
    CU_ASSERT_TRUE(contains(s.last_error, "theme: "));
    CU_ASSERT_TRUE(contains(s.last_error, "groq"));
    const char *checks[] = {"theme", "pdf", "image"};
    for (int i = 0; i < 3; i++) {
        result_t r = result(sub, checks[i]);
        CU_ASSERT_TRUE(equals(r.verdict, "error"));
        CU_ASSERT_EQUAL(r.http_attempts, 2);
        CU_ASSERT_TRUE(equals(r.provider, "groq"));
    }
    CU_ASSERT_EQUAL(stat_i64(&f, "submissions.by_status.requeued"), 1);
    /* Not claimable before its backoff has passed... */
    ev_job_t job;
    sql("UPDATE submissions SET run_after = now() + interval '1 hour' WHERE id = %lld",
        (long long)sub);
    CU_ASSERT_EQUAL(ev_queue_claim(db, OWNER, &job), EV_EEMPTY);

    /* ...and validated once the providers are back. */
    CU_ASSERT_EQUAL_FATAL(simctl_reset(sim), 0);
    run_now(sub);
    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    s = submission(sub);
    CU_ASSERT_TRUE(equals(s.status, "validated"));
    CU_ASSERT_TRUE(equals(s.last_error, ""));
    CU_ASSERT_EQUAL(s.attempts, 2);
    for (int i = 0; i < 3; i++)
        assert_answered(sub, checks[i], "pass", "gemini", GEMINI_MODEL, 1);
    CU_ASSERT_EQUAL(requests("gemini"), 3);
    CU_ASSERT_EQUAL(requests("groq"), 0);
    fx_stop(&f);
}

/*
 * Starts the fixture and processes one submission whose first attempt ends
 * with theme and pdf passed and only the image check in error: Gemini takes
 * the small text and PDF requests but not the large image one, and Groq is
 * overloaded. Returns the submission, back to `pending`.
 */
static int64_t submission_with_image_error(fx_t *f)
{
    const char *o[] = {"MAX_RETRIES", "0", NULL};
    fx_start(f, o);
    sim_set("gemini", "{\"max_body_bytes\": 20000}");
    sim_set("groq", "{\"fault\": \"overloaded\"}");
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    size_t len = 0;
    char *pdf = build_pdf(&len, 1, "Our robot arm stirs soup safely");
    add_file(sub, "pdf", "slides.pdf", pdf, len);
    free(pdf);
    unsigned char *img = big_png(40000);
    add_file(sub, "image", "robot.png", img, 40000);
    free(img);
    CU_ASSERT_EQUAL(process(f, sub, NULL, NULL), 0);
    return sub;
}

static void test_retry_asks_only_missing_checks(void)
{
    fx_t f;
    int64_t sub = submission_with_image_error(&f);
    subrow_t s = submission(sub);
    CU_ASSERT_TRUE(equals(s.status, "pending"));
    CU_ASSERT_TRUE(contains(s.last_error, "image: "));
    CU_ASSERT_FALSE(strstr(s.last_error, "theme") != NULL);
    assert_answered(sub, "theme", "pass", "gemini", GEMINI_MODEL, 1);
    assert_answered(sub, "pdf", "pass", "gemini", GEMINI_MODEL, 1);
    CU_ASSERT_TRUE(equals(result(sub, "image").verdict, "error"));
    result_t theme_before = result(sub, "theme");
    int64_t gem = requests("gemini"), grq = requests("groq");
    CU_ASSERT_EQUAL(gem, 3);
    CU_ASSERT_EQUAL(grq, 1);

    CU_ASSERT_EQUAL_FATAL(simctl_reset(sim), 0);
    run_now(sub);
    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "validated"));
    /* Only the image check was asked again; the passed rows stand as written. */
    CU_ASSERT_EQUAL(requests("gemini"), 1);
    CU_ASSERT_EQUAL(requests("groq"), 0);
    assert_answered(sub, "image", "pass", "gemini", GEMINI_MODEL, 1);
    CU_ASSERT_TRUE(equals(result(sub, "theme").created_at, theme_before.created_at));
    fx_stop(&f);
}

/* An earlier pass stands only for the question it answered: a PDF replaced
 * between two attempts (by a front end rewriting the row) is judged again,
 * and so is the theme check that quotes its text. */
static void test_replaced_file_is_judged_again(void)
{
    fx_t f;
    int64_t sub = submission_with_image_error(&f);
    size_t len = 0;
    CU_ASSERT_TRUE(equals(submission(sub).status, "pending"));
    assert_answered(sub, "pdf", "pass", "gemini", GEMINI_MODEL, 1);

    /* A front end replaces the PDF with one the model rejects. */
    sql("DELETE FROM submission_files WHERE submission_id = %lld AND kind = 'pdf'", (long long)sub);
    char *pdf = build_pdf(&len, 1, "BADPDF a different document");
    add_file(sub, "pdf", "slides-v2.pdf", pdf, len);
    free(pdf);

    CU_ASSERT_EQUAL_FATAL(simctl_reset(sim), 0);
    run_now(sub);
    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "rejected"));
    CU_ASSERT_TRUE(equals(result(sub, "pdf").verdict, "fail"));
    CU_ASSERT_TRUE(contains(result(sub, "pdf").reason, "BADPDF"));
    /* theme (quotes the PDF text), pdf and image were all asked again. */
    CU_ASSERT_EQUAL(requests("gemini"), 3);
    fx_stop(&f);
}

/* A description long enough that requests quoting it are several KB larger
 * than the PDF check's request; the caller frees. */
static char *long_description(void)
{
    const char *line = "Our robot arm stirs soup, measures salt and keeps the stove clean. ";
    ev_hbuf_t b = {0};
    while (b.len < 3900)
        ev_hbuf_add(&b, line, strlen(line));
    return b.p;
}

static void test_theme_retry_still_reads_pdf(void)
{
    fx_t f;
    const char *o[] = {"MAX_RETRIES", "0", NULL};
    fx_start(&f, o);
    /* Gemini refuses the theme request (it quotes the long description) but
     * takes the PDF check; Groq is down: the theme check ends in an error. */
    sim_set("gemini", "{\"max_body_bytes\": 4500}");
    sim_set("groq", "{\"fault\": \"overloaded\"}");
    int64_t ev = add_event("kitchen", true, false);
    char *desc = long_description();
    size_t len = 0;
    char *pdf = build_pdf(&len, 1, "Our robot arm stirs soup safely");
    int64_t sub = add_submission(ev, "Soup robot", desc);
    add_file(sub, "pdf", "slides.pdf", pdf, len);

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "pending"));
    CU_ASSERT_TRUE(equals(result(sub, "theme").verdict, "error"));
    assert_answered(sub, "pdf", "pass", "gemini", GEMINI_MODEL, 1);

    CU_ASSERT_EQUAL_FATAL(simctl_reset(sim), 0);
    run_now(sub);
    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "validated"));
    assert_answered(sub, "theme", "pass", "gemini", GEMINI_MODEL, 1);
    CU_ASSERT_EQUAL(requests("gemini"), 1);

    /* The retried theme question was the full one, document excerpt
     * included: an identical submission finds both answers cached. */
    int64_t twin = add_submission(ev, "Soup robot", desc);
    add_file(twin, "pdf", "slides.pdf", pdf, len);
    CU_ASSERT_EQUAL(process(&f, twin, NULL, NULL), 0);
    CU_ASSERT_TRUE(result(twin, "theme").cached);
    CU_ASSERT_TRUE(result(twin, "pdf").cached);
    CU_ASSERT_EQUAL(requests("gemini"), 1);
    free(pdf);
    free(desc);
    fx_stop(&f);
}

static void test_requeued_after_fix_is_judged_fully(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    add_file(sub, "pdf", "slides.pdf", zip_bytes, sizeof(zip_bytes));
    add_file(sub, "image", "robot.png", png_bytes, sizeof(png_bytes));
    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "rejected"));
    assert_local(sub, "theme", "skipped");

    /* The organiser replaces the broken file and an operator re-queues the
     * submission: the checks skipped because of that file are asked now. */
    size_t len = 0;
    char *pdf = build_pdf(&len, 1, "Our robot arm stirs soup safely");
    sql("DELETE FROM submission_files WHERE submission_id = %lld AND kind = 'pdf'", (long long)sub);
    add_file(sub, "pdf", "slides.pdf", pdf, len);
    free(pdf);
    sql("UPDATE submissions SET status = 'pending', run_after = now() WHERE id = %lld",
        (long long)sub);
    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "validated"));
    assert_answered(sub, "theme", "pass", "gemini", GEMINI_MODEL, 1);
    assert_answered(sub, "pdf", "pass", "gemini", GEMINI_MODEL, 1);
    assert_answered(sub, "image", "pass", "gemini", GEMINI_MODEL, 1);
    CU_ASSERT_EQUAL(requests("gemini"), 3);
    fx_stop(&f);
}

static void test_needs_review_after_max_attempts(void)
{
    fx_t f;
    const char *o[] = {"MAX_RETRIES", "0", "MAX_ATTEMPTS", "2", NULL};
    fx_start(&f, o);
    sim_set("gemini", "{\"fault\": \"internal\"}");
    sim_set("groq", "{\"fault\": \"internal\"}");
    int64_t ev = add_event("kitchen", false, false);
    int64_t sub = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "pending"));
    run_now(sub);
    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    subrow_t s = submission(sub);
    CU_ASSERT_TRUE(equals(s.status, "needs_review"));
    CU_ASSERT_EQUAL(s.attempts, 2);
    CU_ASSERT_TRUE(contains(s.last_error, "theme: "));
    CU_ASSERT_TRUE(equals(result(sub, "theme").verdict, "error"));
    CU_ASSERT_EQUAL(stat_i64(&f, "submissions.by_status.needs_review"), 1);
    CU_ASSERT_EQUAL(stat_i64(&f, "submissions.by_status.requeued"), 1);
    fx_stop(&f);
}

static void test_cached_verdicts(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", true, true);
    int64_t first = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    CU_ASSERT_EQUAL(process(&f, first, NULL, NULL), 0);
    CU_ASSERT_EQUAL(requests("gemini"), 3);

    int64_t second = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    CU_ASSERT_EQUAL(process(&f, second, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(second).status, "validated"));
    const char *checks[] = {"theme", "pdf", "image"};
    for (int i = 0; i < 3; i++) {
        result_t r = result(second, checks[i]);
        CU_ASSERT_TRUE(equals(r.verdict, "pass"));
        CU_ASSERT_TRUE(r.cached);
        CU_ASSERT_EQUAL(r.http_attempts, 0);
        CU_ASSERT_TRUE(equals(r.provider, "gemini"));
        CU_ASSERT_TRUE(equals(r.model, GEMINI_MODEL));
        CU_ASSERT_TRUE(equals(r.reason, result(first, checks[i]).reason));
    }
    CU_ASSERT_EQUAL(requests("gemini"), 3);
    CU_ASSERT_EQUAL(requests("groq"), 0);

    /* A different description is a different question for theme and image. */
    int64_t third = good_submission(ev, "Soup robot", "A robot arm that stirs stew.");
    CU_ASSERT_EQUAL(process(&f, third, NULL, NULL), 0);
    CU_ASSERT_FALSE(result(third, "theme").cached);
    CU_ASSERT_TRUE(result(third, "pdf").cached);
    CU_ASSERT_FALSE(result(third, "image").cached);
    CU_ASSERT_EQUAL(requests("gemini"), 5);

    /* A re-upload of the same PDF under another title costs nothing for the
     * PDF check: its question is the event and the document alone. */
    int64_t fourth =
        submission_with_pdf(ev, "Stew robot v2", "A robot arm that stirs stew.", "Soup robot");
    CU_ASSERT_EQUAL(process(&f, fourth, NULL, NULL), 0);
    CU_ASSERT_FALSE(result(fourth, "theme").cached);
    CU_ASSERT_TRUE(result(fourth, "pdf").cached);
    CU_ASSERT_EQUAL(requests("gemini"), 7);
    fx_stop(&f);
}

static void test_cache_is_per_model(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", true, true);
    int64_t first = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    CU_ASSERT_EQUAL(process(&f, first, NULL, NULL), 0);
    fx_stop(&f);

    /* After a model change the same question is asked again, of the new model. */
    const char *o[] = {"GEMINI_MODEL", "gemini-2.0-flash", NULL};
    fx_open(&f, o);
    int64_t second = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    CU_ASSERT_EQUAL(process(&f, second, NULL, NULL), 0);
    assert_answered(second, "theme", "pass", "gemini", "gemini-2.0-flash", 1);
    assert_answered(second, "pdf", "pass", "gemini", "gemini-2.0-flash", 1);
    assert_answered(second, "image", "pass", "gemini", "gemini-2.0-flash", 1);
    CU_ASSERT_EQUAL(requests("gemini"), 6);
    fx_stop(&f);
}

/* ---- leases and shutdown ------------------------------------------------------------ */

static void test_lease_lost_before_processing(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    ev_job_t job;
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, OWNER, &job), 0);
    /* Another process rescued the lease and claimed it again. */
    sql("UPDATE submissions SET lease_owner = 'someone-else' WHERE id = %lld", (long long)sub);

    CU_ASSERT_EQUAL(ev_pipeline_process(f.w, db, &job, NULL), EV_ELEASE);
    CU_ASSERT_EQUAL(result_rows(sub), 0);
    subrow_t s = submission(sub);
    CU_ASSERT_TRUE(equals(s.status, "processing"));
    CU_ASSERT_TRUE(equals(s.lease_owner, "someone-else"));
    CU_ASSERT_EQUAL(requests("gemini") + requests("groq"), 0);
    fx_stop(&f);
}

typedef struct bg_run {
    fx_t *f;
    ev_db_t *db;
    ev_job_t job;
    int rc;
} bg_run_t;

static void *bg_process(void *arg)
{
    bg_run_t *b = arg;
    b->rc = ev_pipeline_process(b->f->w, b->db, &b->job, NULL);
    return NULL;
}

static void test_lease_lost_while_processing(void)
{
    fx_t f;
    fx_start(&f, NULL);
    /* Each answer takes a while, so the lease moves while the worker waits
     * on the first one, long before it writes anything. */
    sim_set("gemini", "{\"latency_ms\": 400}");
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    bg_run_t b = {.f = &f, .rc = 1};
    CU_ASSERT_EQUAL_FATAL(ev_pgtest_connect(&b.db, db_url), 0);
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(b.db, OWNER, &b.job), 0);
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, bg_process, &b), 0);
    CU_ASSERT_EQUAL(simctl_wait_counter(sim, "gemini", "in_flight", 1, 10000), 0);
    sql("UPDATE submissions SET lease_owner = 'someone-else' WHERE id = %lld", (long long)sub);
    pthread_join(t, NULL);

    CU_ASSERT_EQUAL(b.rc, EV_ELEASE);
    CU_ASSERT_EQUAL(result_rows(sub), 0);
    subrow_t s = submission(sub);
    CU_ASSERT_TRUE(equals(s.status, "processing"));
    CU_ASSERT_TRUE(equals(s.lease_owner, "someone-else"));
    ev_db_free(b.db);
    fx_stop(&f);
}

static void test_stop_before_processing(void)
{
    fx_t f;
    fx_start(&f, NULL);
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    atomic_bool stop = true;
    CU_ASSERT_EQUAL(process(&f, sub, &stop, NULL), EV_ESHUTDOWN);
    CU_ASSERT_EQUAL(result_rows(sub), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "processing"));
    CU_ASSERT_EQUAL(requests("gemini") + requests("groq"), 0);

    /* Also when a local check would already reject it. */
    int64_t bad = add_submission(ev, "Soup robot", NULL);
    add_file(bad, "pdf", "slides.pdf", zip_bytes, sizeof(zip_bytes));
    CU_ASSERT_EQUAL(process(&f, bad, &stop, NULL), EV_ESHUTDOWN);
    CU_ASSERT_EQUAL(result_rows(bad), 0);
    CU_ASSERT_TRUE(equals(submission(bad).status, "processing"));
    fx_stop(&f);
}

typedef struct crew_member {
    fx_t *f;
    int index;
    int processed;
    int failures; /* claims or processing that did not end in 0 */
} crew_member_t;

/* One worker thread: its own pipeline worker and connection, claiming until
 * the queue is empty. */
static void *crew_run(void *arg)
{
    crew_member_t *m = arg;
    ev_db_t *own = NULL;
    ev_pipeline_worker_t *w = NULL;
    if (ev_pgtest_connect(&own, db_url) != 0 ||
        ev_pipeline_worker_new(&w, m->f->pipe, m->index) != 0) {
        m->failures++;
        goto out;
    }
    for (;;) {
        ev_job_t job;
        int rc = ev_queue_claim(own, OWNER, &job);
        if (rc == EV_EEMPTY)
            break;
        if (rc != 0 || ev_pipeline_process(w, own, &job, NULL) != 0) {
            m->failures++;
            break;
        }
        m->processed++;
    }
out:
    ev_pipeline_worker_free(w);
    ev_db_free(own);
    return NULL;
}

static void test_workers_share_providers(void)
{
    fx_t f;
    const char *o[] = {"GEMINI_MAX_CONCURRENT", "2", NULL};
    fx_start(&f, o);
    sim_set("gemini", "{\"latency_ms\": 40}");
    int64_t ev = add_event("kitchen", true, true);
    enum { SUBS = 12, CREW = 4 };
    for (int i = 0; i < SUBS; i++) {
        char title[32];
        snprintf(title, sizeof(title), "Robot number %d", i);
        good_submission(ev, title, "A robot arm that stirs soup.");
    }
    crew_member_t crew[CREW];
    pthread_t threads[CREW];
    for (int i = 0; i < CREW; i++) {
        crew[i] = (crew_member_t){.f = &f, .index = i};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&threads[i], NULL, crew_run, &crew[i]), 0);
    }
    int processed = 0, failures = 0;
    for (int i = 0; i < CREW; i++) {
        pthread_join(threads[i], NULL);
        processed += crew[i].processed;
        failures += crew[i].failures;
    }
    CU_ASSERT_EQUAL(failures, 0);
    CU_ASSERT_EQUAL(processed, SUBS);
    CU_ASSERT_EQUAL(query_i64("SELECT count(*) FROM submissions WHERE status = 'validated'"), SUBS);
    CU_ASSERT_EQUAL(query_i64("SELECT count(*) FROM validation_results WHERE verdict = 'pass' "
                              "AND provider = 'gemini' AND NOT cached"),
                    3 * SUBS);
    /* Four workers, but never more than GEMINI_MAX_CONCURRENT requests at once. */
    CU_ASSERT_EQUAL(requests("gemini"), 3 * SUBS);
    int64_t peak = simctl_counter(sim, "gemini", "max_in_flight");
    CU_ASSERT(peak >= 1 && peak <= 2);
    CU_ASSERT_EQUAL(stat_i64(&f, "workers.busy"), 0);
    CU_ASSERT_EQUAL(stat_i64(&f, "submissions.processed"), SUBS);
    fx_stop(&f);
}

/* ---- provider accounts: quota, keys, breaker --------------------------------------- */

static void test_daily_quota_cools_gemini_down(void)
{
    fx_t f;
    fx_start(&f, NULL);
    sim_set("gemini", "{\"fault\": \"daily_quota\"}");
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "validated"));
    assert_answered(sub, "theme", "pass", "groq", GROQ_MODEL, 2);
    assert_answered(sub, "pdf", "pass", "groq", GROQ_MODEL, 1);
    assert_answered(sub, "image", "pass", "groq", GROQ_VISION, 1);
    /* One 429 was enough: no retry today. */
    CU_ASSERT_EQUAL(requests("gemini"), 1);
    CU_ASSERT_EQUAL(requests("groq"), 3);
    CU_ASSERT_TRUE(stat_bool(&f, "providers.gemini.quota_cooldown"));
    CU_ASSERT_TRUE(stat_str_is(&f, "providers.gemini.breaker", "open"));
    CU_ASSERT_FALSE(stat_bool(&f, "providers.groq.quota_cooldown"));
    CU_ASSERT_EQUAL(stat_i64(&f, "providers.gemini.rate_limited"), 1);
    fx_stop(&f);
}

/* The whole log file written so far; the caller frees. */
static char *read_log(void)
{
    struct stat st;
    CU_ASSERT_FATAL(fstat(log_fd, &st) == 0);
    char *s = ev_malloc((size_t)st.st_size + 1);
    ssize_t n = pread(log_fd, s, (size_t)st.st_size, 0);
    s[n > 0 ? n : 0] = '\0';
    return s;
}

static void test_invalid_key_disables_gemini(void)
{
    fx_t f;
    const char *o[] = {"GEMINI_API_KEY", WRONG_GEMINI_KEY, NULL};
    fx_start(&f, o);
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "validated"));
    assert_answered(sub, "theme", "pass", "groq", GROQ_MODEL, 2);
    assert_answered(sub, "pdf", "pass", "groq", GROQ_MODEL, 1);
    assert_answered(sub, "image", "pass", "groq", GROQ_VISION, 1);
    CU_ASSERT_EQUAL(requests("gemini"), 1);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "auth_failed"), 1);
    CU_ASSERT_TRUE(stat_bool(&f, "providers.gemini.disabled"));
    CU_ASSERT_FALSE(stat_bool(&f, "providers.groq.disabled"));

    /* Later submissions never try Gemini again. */
    int64_t next = good_submission(ev, "Bread robot", "A robot that kneads dough.");
    CU_ASSERT_EQUAL(process(&f, next, NULL, NULL), 0);
    CU_ASSERT_EQUAL(requests("gemini"), 1);
    assert_answered(next, "theme", "pass", "groq", GROQ_MODEL, 1);

    /* The log says so, loudly, without the keys. */
    char *log = read_log();
    CU_ASSERT_TRUE(contains(log, "disabled for the life of this process"));
    CU_ASSERT_PTR_NULL(strstr(log, WRONG_GEMINI_KEY));
    CU_ASSERT_PTR_NULL(strstr(log, SIMCTL_GEMINI_KEY));
    CU_ASSERT_PTR_NULL(strstr(log, SIMCTL_GROQ_KEY));
    free(log);
    fx_stop(&f);
}

static void test_breaker_opens(void)
{
    fx_t f;
    const char *o[] = {"GEMINI_CIRCUIT_BREAKER_MIN_CALLS", "2",  "MAX_RETRIES", "2",
                       "MAX_API_CALLS_PER_SUBMISSION",     "10", NULL};
    fx_start(&f, o);
    sim_set("gemini", "{\"fault\": \"overloaded\"}");
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    CU_ASSERT_TRUE(equals(submission(sub).status, "validated"));
    /* Two failures open the breaker: no third Gemini attempt, and the next
     * checks go straight to Groq. */
    assert_answered(sub, "theme", "pass", "groq", GROQ_MODEL, 3);
    assert_answered(sub, "pdf", "pass", "groq", GROQ_MODEL, 1);
    assert_answered(sub, "image", "pass", "groq", GROQ_VISION, 1);
    CU_ASSERT_EQUAL(requests("gemini"), 2);
    CU_ASSERT_TRUE(stat_str_is(&f, "providers.gemini.breaker", "open"));
    CU_ASSERT_EQUAL(stat_i64(&f, "fallbacks"), 3);

    int64_t next = good_submission(ev, "Bread robot", "A robot that kneads dough.");
    CU_ASSERT_EQUAL(process(&f, next, NULL, NULL), 0);
    CU_ASSERT_EQUAL(requests("gemini"), 2);
    CU_ASSERT_EQUAL(requests("groq"), 6);
    fx_stop(&f);
}

/* ---- main ---------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int init_suite(void)
{
    if (ev_http_global_init() != 0)
        return 1;
    snprintf(tmp_root, sizeof(tmp_root), "/tmp/ev-test-pipeline-XXXXXX");
    if (!mkdtemp(tmp_root))
        return 1;
    snprintf(upload_dir, sizeof(upload_dir), "%s/uploads", tmp_root);
    if (mkdir(upload_dir, 0755) != 0)
        return 1;
    snprintf(log_path, sizeof(log_path), "%s/test.log", tmp_root);
    log_fd = open(log_path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0)
        return 1;
    ev_log_set_fd(log_fd);
    ev_log_set_level(EV_LOG_DEBUG);
    if (simctl_start(&sim, NULL) != 0)
        return 1;
    if (ev_pgtest_create_db(&db_url) != 0)
        return 1;
    if (ev_pgtest_connect(&db, db_url) != 0)
        return 1;
    return 0;
}

static int clean_suite(void)
{
    ev_log_set_fd(2);
    ev_db_free(db);
    ev_pgtest_drop_db(db_url);
    simctl_free(sim);
    if (log_fd >= 0)
        close(log_fd);
    if (tmp_root[0])
        nftw(tmp_root, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    ev_http_global_cleanup();
    return 0;
}

/*
 * Poppler's GObjects come from GLib's slice allocator, which hands blocks
 * between threads through locks ThreadSanitizer cannot see; its reports
 * there are not races (see tests/unit/test_pdf.c). Harmless without TSan.
 */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:g_slice_\n";
}

/* ---- CHECK_MODE=combined ------------------------------------------------------ */

static bool combined_row(int64_t sub, const char *check)
{
    return query_i64("SELECT count(*) FROM validation_results WHERE submission_id = %lld AND "
                     "check_name = '%s' AND combined",
                     (long long)sub, check) == 1;
}

static void test_combined_one_call(void)
{
    fx_t f;
    const char *o[] = {"CHECK_MODE", "combined", NULL};
    fx_start(&f, o);
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = good_submission(ev, "Soup robot", "OFFTOPIC: our holiday photos.");

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    /* One call answered the three questions, each with its own verdict. */
    CU_ASSERT_EQUAL(requests("gemini"), 1);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "malformed"), 0);
    CU_ASSERT_TRUE(equals(result(sub, "theme").verdict, "fail"));
    CU_ASSERT_TRUE(contains(result(sub, "theme").reason, "OFFTOPIC"));
    CU_ASSERT_TRUE(equals(result(sub, "pdf").verdict, "pass"));
    CU_ASSERT_TRUE(equals(result(sub, "image").verdict, "pass"));
    const char *checks[] = {"theme", "pdf", "image"};
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_TRUE(combined_row(sub, checks[i]));
        CU_ASSERT_TRUE(equals(result(sub, checks[i]).provider, "gemini"));
    }
    /* The call is counted once, on the first row. */
    CU_ASSERT_EQUAL(query_i64("SELECT sum(http_attempts) FROM validation_results WHERE "
                              "submission_id = %lld",
                              (long long)sub),
                    1);
    CU_ASSERT_TRUE(equals(submission(sub).status, "rejected"));
    /* Each check has its own cache entry: the same submission again asks nothing. */
    int64_t again = good_submission(ev, "Soup robot", "OFFTOPIC: our holiday photos.");
    CU_ASSERT_EQUAL(process(&f, again, NULL, NULL), 0);
    CU_ASSERT_EQUAL(requests("gemini"), 1);
    CU_ASSERT_TRUE(result(again, "pdf").cached);
    fx_stop(&f);
}

static void test_combined_missing_part_asked_alone(void)
{
    fx_t f;
    const char *o[] = {"CHECK_MODE", "combined", NULL};
    fx_start(&f, o);
    sim_set("gemini", "{\"drop_part\": \"pdf\"}");
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = good_submission(ev, "Soup robot", "A robot arm that stirs soup.");

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    /* The combined call, then the PDF question alone. */
    CU_ASSERT_EQUAL(requests("gemini"), 2);
    CU_ASSERT_TRUE(equals(submission(sub).status, "validated"));
    CU_ASSERT_TRUE(combined_row(sub, "theme"));
    CU_ASSERT_TRUE(combined_row(sub, "image"));
    CU_ASSERT_FALSE(combined_row(sub, "pdf"));
    assert_answered(sub, "pdf", "pass", "gemini", GEMINI_MODEL, 1);
    fx_stop(&f);
}

static void test_combined_falls_back_to_groq(void)
{
    fx_t f;
    const char *o[] = {"CHECK_MODE", "combined", "MAX_RETRIES", "0", NULL};
    fx_start(&f, o);
    sim_set("gemini", "{\"fault\": \"overloaded\"}");
    int64_t ev = add_event("kitchen", true, true);
    int64_t sub = add_submission(ev, "Soup robot", "A robot arm that stirs soup.");
    size_t len = 0;
    char *pdf = build_pdf(&len, 1, "BADPDF lorem ipsum placeholder");
    add_file(sub, "pdf", "slides.pdf", pdf, len);
    free(pdf);
    add_file(sub, "image", "robot.png", png_bytes, sizeof(png_bytes));

    CU_ASSERT_EQUAL(process(&f, sub, NULL, NULL), 0);
    /* Groq got one vision call with the PDF as text and the image. */
    CU_ASSERT_EQUAL(requests("groq"), 1);
    CU_ASSERT_EQUAL(simctl_counter(sim, "groq", "malformed"), 0);
    result_t r = result(sub, "pdf");
    CU_ASSERT_TRUE(equals(r.verdict, "fail"));
    CU_ASSERT_TRUE(equals(r.provider, "groq"));
    CU_ASSERT_TRUE(contains(r.reason, "BADPDF"));
    CU_ASSERT_TRUE(equals(result(sub, "image").model, GROQ_VISION));
    CU_ASSERT_TRUE(equals(result(sub, "theme").verdict, "pass"));
    CU_ASSERT_TRUE(combined_row(sub, "image"));
    fx_stop(&f);
}

static const ev_test_t pipeline_tests[] = {
    {"good submission is validated by gemini", test_good_submission},
    {"combined: one call, a row and a cache entry per check", test_combined_one_call},
    {"combined: a missing part is asked alone", test_combined_missing_part_asked_alone},
    {"combined: fallback to groq in one vision call", test_combined_falls_back_to_groq},
    {"OFFTOPIC description is rejected by the theme check", test_offtopic_rejected},
    {"ZIP named .pdf fails locally, no API call", test_zip_named_pdf},
    {"HTML named .png fails locally", test_html_named_png},
    {"GIF image fails locally", test_gif_refused},
    {"encrypted PDF fails locally", test_encrypted_pdf},
    {"truncated PDF fails locally", test_truncated_pdf},
    {"PDF over PDF_MAX_PAGES fails locally", test_pdf_too_many_pages},
    {"PDF decompression bomb fails locally, no API call", test_pdf_bomb_fails_locally},
    {"images over several requests; one no request carries fails",
     test_images_over_several_requests},
    {"an image type no configured provider accepts fails locally",
     test_image_type_no_provider_accepts},
    {"image over IMAGE_MAX_BYTES on disk fails locally", test_image_too_big_on_disk},
    {"more than MAX_IMAGES images fails locally", test_too_many_images},
    {"storage path traversal is refused, never opened", test_storage_path_traversal},
    {"missing PDF: required fails, optional skipped", test_missing_pdf},
    {"call budget exhausted: error, requeued", test_budget_exhausted},
    {"gemini overloaded: groq answers", test_fallback_to_groq},
    {"groq's PDF check reads the extracted text", test_groq_pdf_check_reads_text},
    {"outage: requeued, then validated", test_outage_then_recovery},
    {"retry asks only the missing checks", test_retry_asks_only_missing_checks},
    {"a retried theme check still quotes the PDF", test_theme_retry_still_reads_pdf},
    {"a file replaced after a pass is judged again", test_replaced_file_is_judged_again},
    {"re-queued after a fix: skipped checks are asked", test_requeued_after_fix_is_judged_fully},
    {"MAX_ATTEMPTS exhausted: needs_review", test_needs_review_after_max_attempts},
    {"identical submission uses cached verdicts", test_cached_verdicts},
    {"a model change is not answered from the cache", test_cache_is_per_model},
    {"lease lost before processing: nothing written", test_lease_lost_before_processing},
    {"lease lost while processing: nothing written", test_lease_lost_while_processing},
    {"stop set before processing: nothing written", test_stop_before_processing},
    {"four workers share GEMINI_MAX_CONCURRENT", test_workers_share_providers},
    {"daily quota: gemini cools down, groq answers", test_daily_quota_cools_gemini_down},
    {"invalid gemini key: disabled, keys never logged", test_invalid_key_disables_gemini},
    {"breaker opens and skips gemini", test_breaker_opens},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"pipeline", init_suite, clean_suite, pipeline_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
