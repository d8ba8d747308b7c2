/*
 * pipeline.c - one submission from claim to verdict (SPEC §5, issue 4).
 *
 * How: load the submission and its event (guarded by the lease), load and
 * check every file locally (libmagic type, size, PDF open/encryption/pages,
 * image count) at no API cost, then run the LLM checks (theme, pdf, image)
 * through the router, reusing a cached verdict when the same question about
 * the same bytes was already answered. Each check's result is upserted into
 * validation_results as soon as it is known, guarded by the lease, and the
 * submission is finished through the queue: any fail -> rejected, else any
 * error -> requeued with backoff (needs_review after MAX_ATTEMPTS), else
 * validated. Checks that passed in an earlier attempt are not asked again.
 *
 * Threads: ev_pipeline_t is shared and immutable after creation (the router
 * and stats inside are thread-safe). ev_pipeline_worker_t belongs to one
 * worker thread: its magic handle, CURL handle and budget are never shared.
 * No locks are taken here.
 */
#include "ev/pipeline.h"

#include "ev/budget.h"
#include "ev/spend.h"
#include "ev/error.h"
#include "ev/files.h"
#include "ev/hash.h"
#include "ev/http.h"
#include "ev/log.h"
#include "ev/pdf.h"
#include "ev/prompts.h"
#include "ev/providers.h"
#include "ev/router.h"
#include "ev/sandbox.h"
#include "ev/stats.h"
#include "ev/util.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Text kept from a PDF: enough for the prompts, bounded for memory. */
#define PDF_TEXT_MAX_BYTES (64 * 1024)
/* One page's share of it, so a single enormous page cannot crowd out the rest. */
#define PDF_PAGE_TEXT_MAX_BYTES (16 * 1024)
#define REASON_MAX 1000
#define LAST_ERROR_MAX 1500

struct ev_pipeline {
    const ev_config_t *cfg; /* immutable */
    ev_stats_t *stats;      /* thread-safe; may be NULL */
    ev_router_t *router;    /* thread-safe */
    ev_files_options_t files_opts;
    struct ev_spend *spend; /* thread-safe; may be NULL; set before the workers start */
    ev_sandbox_t *sandbox;  /* thread-safe: PDFs are parsed in its children */
    /* Images per request: what the most accommodating configured provider
     * takes (bytes of media, base64 included; images, 0 = any number).
     * Immutable after creation. */
    size_t image_request_bytes;
    int image_request_max;
};

struct ev_pipeline_worker {
    ev_pipeline_t *p;
    int index;
    ev_files_t *files;   /* this thread's magic handle */
    ev_http_t *http;     /* this thread's CURL handle */
    ev_budget_t *budget; /* reset per submission */
};

/* What is known about one check while a submission is processed. */
typedef enum { V_NONE = 0, V_PASS, V_FAIL, V_ERROR, V_SKIPPED } verdict_t;

static const char *verdict_name(verdict_t v)
{
    static const char *const names[] = {"none", "pass", "fail", "error", "skipped"};
    return names[v];
}

typedef struct check_result {
    verdict_t verdict;
    bool from_earlier_attempt; /* passed in an earlier attempt: leave the row alone */
    char earlier_key[65];      /* cache key of an earlier pass, "" when none */
    bool cached;
    bool combined; /* answered by a call that asked several checks at once */
    double score;  /* < 0: none */
    char reason[REASON_MAX + 1];
    const char *provider; /* static string or NULL */
    char model[128];
    int http_attempts;
    int64_t latency_ms, tokens_in, tokens_out;
    char cache_key[65];
} check_result_t;

/* Everything loaded for one submission. */
typedef struct sub {
    char *title, *description, *event_name, *theme, *rules;
    bool require_pdf, require_image;
    PGresult *file_rows[1 + 16]; /* keeps borrowed content alive */
    ev_files_item_t *pdf;        /* the PDF, if present and locally fine */
    char *pdf_text;
    ev_files_item_t *images[16];
    int n_images;
    check_result_t checks[EV_CHECK_COUNT];
} sub_t;

static void set_reason(check_result_t *c, verdict_t v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_reason(check_result_t *c, verdict_t v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->reason, sizeof(c->reason), fmt, ap);
    va_end(ap);
    c->verdict = v;
}

static void sub_free(sub_t *s)
{
    free(s->title);
    free(s->description);
    free(s->event_name);
    free(s->theme);
    free(s->rules);
    free(s->pdf_text);
    ev_files_item_free(s->pdf);
    for (int i = 0; i < s->n_images; i++)
        ev_files_item_free(s->images[i]);
    for (size_t i = 0; i < EV_ARRAY_LEN(s->file_rows); i++)
        PQclear(s->file_rows[i]);
}

/* ---- lifecycle ---- */

/* Room in a request for the prompt and the JSON around the media. */
#define REQUEST_OVERHEAD_BYTES (256 * 1024)

static size_t base64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/*
 * The image check's request limits: those of the configured provider that
 * takes the largest request (a batch that fits it can always be judged),
 * and a one-line warning when even that cannot take one image of
 * IMAGE_MAX_BYTES (such images then fail locally, see load_files).
 */
static void image_request_limits(ev_pipeline_t *p)
{
    const ev_config_t *cfg = p->cfg;
    size_t best = 0;
    int best_max = 0;
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        const ev_provider_ops_t *ops = ev_providers_get((ev_provider_id_t)i);
        if (!cfg->providers[i].api_key || !(ops->caps & EV_PROVIDER_CAP_IMAGES))
            continue;
        size_t lim = cfg->providers[i].max_request_bytes > 0
                         ? (size_t)cfg->providers[i].max_request_bytes
                         : ops->max_request;
        if (lim > best) {
            best = lim;
            best_max = ops->max_images;
        }
    }
    p->image_request_bytes = best > REQUEST_OVERHEAD_BYTES ? best - REQUEST_OVERHEAD_BYTES : 0;
    p->image_request_max = best_max;
    if (best > 0 && base64_len((size_t)cfg->image_max_bytes) > p->image_request_bytes)
        ev_log(EV_LOG_WARN,
               "IMAGE_MAX_BYTES %lld cannot fit any configured provider's request (at most "
               "%zu bytes with base64): larger images fail locally",
               (long long)cfg->image_max_bytes, best);
}

/*
 * Splits n images into consecutive batches that each fit one request;
 * ends[k] is one past the last image of batch k. Returns the number of
 * batches (every image fits alone: load_files refused the others).
 */
static int image_batches(const ev_pipeline_t *p, const ev_llm_media_t *m, int n, int ends[])
{
    int nb = 0, in = 0;
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        size_t b = base64_len(m[i].len);
        bool full = in > 0 && (bytes + b > p->image_request_bytes ||
                               (p->image_request_max > 0 && in == p->image_request_max));
        if (full) {
            ends[nb++] = i;
            bytes = 0;
            in = 0;
        }
        bytes += b;
        in++;
    }
    if (in > 0)
        ends[nb++] = n;
    return nb;
}

int ev_pipeline_new(ev_pipeline_t **out, const ev_config_t *cfg, struct ev_stats *stats)
{
    ev_pipeline_t *p = ev_calloc(1, sizeof(*p));
    *out = NULL;
    p->cfg = cfg;
    p->stats = stats;
    ev_files_options_from_config(&p->files_opts, cfg);
    ev_sandbox_options_t so = EV_SANDBOX_OPTIONS_INIT;
    so.cpu_ms = cfg->parse_cpu_ms;
    so.memory_mb = cfg->parse_memory_mb;
    so.timeout_ms = cfg->parse_timeout_ms;
    image_request_limits(p);
    int rc = ev_sandbox_new(&p->sandbox, &so);
    if (rc == 0)
        rc = ev_router_new(&p->router, cfg, stats, NULL);
    if (rc < 0) {
        ev_sandbox_free(p->sandbox);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void ev_pipeline_free(ev_pipeline_t *p)
{
    if (!p)
        return;
    ev_router_free(p->router);
    ev_sandbox_free(p->sandbox);
    free(p);
}

bool ev_pipeline_ready(ev_pipeline_t *p)
{
    return ev_router_ready(p->router);
}

struct ev_availability *ev_pipeline_availability(ev_pipeline_t *p)
{
    return ev_router_availability(p->router);
}

int ev_pipeline_attach_cluster(ev_pipeline_t *p, struct ev_cluster *c)
{
    return ev_router_attach_cluster(p->router, c);
}

bool ev_pipeline_usable(ev_pipeline_t *p)
{
    return ev_router_any_usable(p->router);
}

int ev_pipeline_worker_new(ev_pipeline_worker_t **out, ev_pipeline_t *p, int index)
{
    int rc;
    ev_pipeline_worker_t *w = ev_calloc(1, sizeof(*w));
    *out = NULL;
    w->p = p;
    w->index = index;
    if ((rc = ev_files_new(&w->files, &p->files_opts)) < 0)
        goto fail;
    if ((rc = ev_http_new(&w->http)) < 0)
        goto fail;
    if ((rc = ev_budget_new(&w->budget, p->cfg->max_api_calls_per_submission, ev_clock_system())) <
        0)
        goto fail;
    *out = w;
    return 0;
fail:
    ev_pipeline_worker_free(w);
    return rc;
}

void ev_pipeline_worker_free(ev_pipeline_worker_t *w)
{
    if (!w)
        return;
    ev_files_free(w->files);
    ev_http_free(w->http);
    ev_budget_free(w->budget);
    free(w);
}

/* ---- database helpers ---- */

static char *dup_or_null(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : ev_strdup(PQgetvalue(r, row, col));
}

static int load_submission(ev_db_t *db, const ev_job_t *job, sub_t *s)
{
    char id[32], attempt[16];
    snprintf(id, sizeof(id), "%lld", (long long)job->submission_id);
    snprintf(attempt, sizeof(attempt), "%d", job->attempt);
    const char *params[] = {id, job->lease_owner, attempt};
    PGresult *r = NULL;
    int rc = ev_db_exec(db, &r,
                        "SELECT s.title, s.description, e.name, e.theme, e.rules, e.require_pdf, "
                        "e.require_image FROM submissions s JOIN events e ON e.id = s.event_id "
                        "WHERE s.id = $1 AND s.status = 'processing' AND s.lease_owner = $2 "
                        "AND s.attempts = $3",
                        3, params);
    if (rc < 0)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return EV_ELEASE;
    }
    s->title = dup_or_null(r, 0, 0);
    s->description = dup_or_null(r, 0, 1);
    s->event_name = dup_or_null(r, 0, 2);
    s->theme = dup_or_null(r, 0, 3);
    s->rules = dup_or_null(r, 0, 4);
    s->require_pdf = PQgetvalue(r, 0, 5)[0] == 't';
    s->require_image = PQgetvalue(r, 0, 6)[0] == 't';
    PQclear(r);

    /* Passes recorded by an earlier attempt, with the question they
     * answered (their cache key): see keep_earlier_passes(). */
    r = NULL;
    rc = ev_db_exec(db, &r,
                    "SELECT check_name, cache_key FROM validation_results "
                    "WHERE submission_id = $1 AND verdict = 'pass' AND cache_key IS NOT NULL",
                    1, params);
    if (rc < 0)
        return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        for (int c = 0; c < EV_CHECK_COUNT; c++) {
            if (strcmp(PQgetvalue(r, i, 0), ev_check_name((ev_check_t)c)) == 0)
                snprintf(s->checks[c].earlier_key, sizeof(s->checks[c].earlier_key), "%s",
                         PQgetvalue(r, i, 1));
        }
    }
    PQclear(r);
    return 0;
}

/* Upserts one check's result, only while the lease is still ours. */
static int write_result(ev_db_t *db, const ev_job_t *job, ev_check_t check, const check_result_t *c,
                        ev_budget_t *budget)
{
    char id[32], attempt[16], score[32], http[16], lat[32], tin[32], tout[32];
    snprintf(id, sizeof(id), "%lld", (long long)job->submission_id);
    snprintf(attempt, sizeof(attempt), "%d", job->attempt);
    snprintf(score, sizeof(score), "%.6f", c->score);
    snprintf(http, sizeof(http), "%d", c->http_attempts);
    snprintf(lat, sizeof(lat), "%lld", (long long)c->latency_ms);
    snprintf(tin, sizeof(tin), "%lld", (long long)c->tokens_in);
    snprintf(tout, sizeof(tout), "%lld", (long long)c->tokens_out);
    json_object *calls = ev_budget_history_json(budget, ev_check_name(check));
    char *reason = ev_db_clip_text(c->reason, REASON_MAX);
    const char *params[] = {
        id,
        ev_check_name(check),
        verdict_name(c->verdict),
        c->score >= 0 ? score : NULL,
        reason,
        c->provider,
        c->model[0] ? c->model : NULL,
        http,
        c->http_attempts > 0 ? lat : NULL,
        c->http_attempts > 0 ? tin : NULL,
        c->http_attempts > 0 ? tout : NULL,
        c->cache_key[0] ? c->cache_key : NULL,
        c->cached ? "true" : "false",
        json_object_to_json_string_ext(calls, JSON_C_TO_STRING_PLAIN),
        job->lease_owner,
        attempt,
        c->combined ? "true" : "false",
    };
    PGresult *r = NULL;
    int rc = ev_db_exec(
        db, &r,
        "INSERT INTO validation_results (submission_id, check_name, verdict, score, reason, "
        "provider, model, http_attempts, latency_ms, tokens_in, tokens_out, cache_key, cached, "
        "calls, combined) SELECT $1, $2, $3, $4::float8, $5, $6, $7, $8::int, $9::bigint, "
        "$10::bigint, $11::bigint, $12, $13::boolean, $14::jsonb, $17::boolean WHERE EXISTS "
        "(SELECT 1 FROM submissions "
        "WHERE id = $1 AND status = 'processing' AND lease_owner = $15 AND attempts = $16::int) "
        "ON CONFLICT (submission_id, check_name) DO UPDATE SET verdict = excluded.verdict, "
        "score = excluded.score, reason = excluded.reason, provider = excluded.provider, "
        "model = excluded.model, http_attempts = excluded.http_attempts, "
        "latency_ms = excluded.latency_ms, tokens_in = excluded.tokens_in, "
        "tokens_out = excluded.tokens_out, cache_key = excluded.cache_key, "
        "cached = excluded.cached, calls = excluded.calls, combined = excluded.combined, "
        "created_at = now()",
        17, params);
    free(reason);
    json_object_put(calls);
    if (rc < 0)
        return rc;
    rc = strcmp(PQcmdTuples(r), "1") == 0 ? 0 : EV_ELEASE;
    PQclear(r);
    return rc;
}

/* ---- files and local checks ---- */

/* IMAGE_SPLIT_REQUESTS=false: images that need more than one request fail
 * locally, with what they total and what one request takes. */
static void images_fit_one_request(const ev_pipeline_t *p, const sub_t *s, check_result_t *c)
{
    ev_llm_media_t media[16];
    int ends[16];
    size_t total = 0;
    for (int i = 0; i < s->n_images; i++) {
        size_t len = 0;
        const unsigned char *d = ev_files_item_data(s->images[i], &len);
        media[i] = (ev_llm_media_t){ev_files_item_mime(s->images[i]), d, len};
        total += len;
    }
    if (s->n_images < 2 || image_batches(p, media, s->n_images, ends) == 1)
        return;
    char have[48], lim[48];
    ev_files_format_size(have, sizeof(have), (int64_t)total, false);
    ev_files_format_size(lim, sizeof(lim), (int64_t)(p->image_request_bytes / 4 * 3), false);
    if (p->image_request_max > 0 && s->n_images > p->image_request_max)
        set_reason(c, V_FAIL, "%d images; at most %d per submission", s->n_images,
                   p->image_request_max);
    else
        set_reason(c, V_FAIL, "%d images total %s; at most %s per submission", s->n_images, have,
                   lim);
}

/* Whether some configured provider takes images of this type. */
static bool image_type_accepted(const ev_pipeline_t *p, const char *mime)
{
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        const ev_provider_ops_t *ops = ev_providers_get((ev_provider_id_t)i);
        if (p->cfg->providers[i].api_key && ev_provider_accepts_image(ops, mime))
            return true;
    }
    return false;
}

/* An image that no configured provider takes (its type, or its size in one
 * request) can never be judged: a local fail now instead of attempts that
 * all fail. */
static bool image_fits_a_request(const ev_pipeline_t *p, const ev_files_item_t *item,
                                 check_result_t *c)
{
    const char *mime = ev_files_item_mime(item);
    if (!image_type_accepted(p, mime)) {
        const char *what = ev_files_describe_mime(mime);
        set_reason(c, V_FAIL, "image '%s' is %s, which none of the configured providers accepts",
                   ev_files_item_filename(item), what ? what : mime);
        return false;
    }
    size_t len = 0;
    (void)ev_files_item_data(item, &len);
    if (p->image_request_bytes == 0 || base64_len(len) <= p->image_request_bytes)
        return true;
    char have[48], lim[48];
    ev_files_format_size(have, sizeof(have), (int64_t)len, false);
    ev_files_format_size(lim, sizeof(lim), (int64_t)(p->image_request_bytes / 4 * 3), false);
    set_reason(c, V_FAIL, "image '%s' is %s; the configured providers take at most %s per request",
               ev_files_item_filename(item), have, lim);
    return false;
}

/*
 * Loads every file of the submission and runs the local checks, filling the
 * pdf and image check results with local fails or skips. Sizes are checked
 * from octet_length() before any content is fetched. Returns 0, or a
 * database code; an unreadable upload directory sets an `error` verdict.
 *
 * Files whose check passed in an earlier attempt are not loaded again, with
 * one exception: the theme check quotes the PDF's text, so while the theme
 * is still to be asked the PDF is opened for its text even if its own check
 * already passed. A problem with it then only costs the excerpt (the earlier
 * pass stands); it is recorded in a scratch result that is never written.
 */
static int load_files(ev_pipeline_worker_t *w, ev_db_t *db, const ev_job_t *job, sub_t *s)
{
    const ev_files_options_t *fo = &w->p->files_opts;
    char id[32];
    snprintf(id, sizeof(id), "%lld", (long long)job->submission_id);
    const char *params[] = {id};
    PGresult *meta = NULL;
    int rc = ev_db_exec(db, &meta,
                        "SELECT id, kind, filename, storage_path, octet_length(content) "
                        "FROM submission_files WHERE submission_id = $1 ORDER BY id",
                        1, params);
    if (rc < 0)
        return rc;

    check_result_t *ic = &s->checks[EV_CHECK_IMAGE];
    check_result_t *pc = &s->checks[EV_CHECK_PDF];
    int n_pdf = 0, n_img = 0, rows = PQntuples(meta);
    for (int i = 0; i < rows; i++) {
        if (strcmp(PQgetvalue(meta, i, 1), "pdf") == 0)
            n_pdf++;
        else
            n_img++;
    }
    char *why = NULL;
    if (n_pdf > 1)
        set_reason(pc, V_FAIL, "%d PDFs attached; one is allowed", n_pdf);
    if (ev_files_check_count(fo, n_img, &why) < 0) {
        set_reason(ic, V_FAIL, "%s", why);
        free(why);
        why = NULL;
    }

    int slot = 0;
    for (int i = 0; i < rows && rc == 0; i++) {
        ev_file_kind_t kind =
            strcmp(PQgetvalue(meta, i, 1), "pdf") == 0 ? EV_FILE_PDF : EV_FILE_IMAGE;
        check_result_t *c = kind == EV_FILE_PDF ? pc : ic;
        if (c->verdict == V_FAIL || c->verdict == V_ERROR)
            continue;
        const char *filename = PQgetisnull(meta, i, 2) ? NULL : PQgetvalue(meta, i, 2);
        ev_files_source_t src = {.kind = kind, .filename = filename};
        if (!PQgetisnull(meta, i, 4)) {
            int64_t size = strtoll(PQgetvalue(meta, i, 4), NULL, 10);
            if (ev_files_check_size(fo, kind, filename, size, &why) < 0) {
                set_reason(c, V_FAIL, "%s", why);
                free(why);
                why = NULL;
                continue;
            }
            const char *fp[] = {PQgetvalue(meta, i, 0)};
            PGresult *content = NULL;
            rc = ev_db_exec_binary(db, &content,
                                   "SELECT content FROM submission_files WHERE id = $1", 1, fp);
            if (rc < 0)
                break;
            if (PQntuples(content) != 1 || PQgetisnull(content, 0, 0)) {
                PQclear(content);
                set_reason(c, V_ERROR, "file row changed while it was being read");
                continue;
            }
            EV_ASSERT(slot < (int)EV_ARRAY_LEN(s->file_rows));
            s->file_rows[slot++] = content;
            src.content = PQgetvalue(content, 0, 0);
            src.content_len = (size_t)PQgetlength(content, 0, 0);
        } else {
            src.storage_path = PQgetvalue(meta, i, 3);
            src.storage_path_len = (size_t)PQgetlength(meta, i, 3);
        }
        ev_files_item_t *item = NULL;
        int lrc = ev_files_load(w->files, &item, &src, &why);
        if (lrc == EV_EIO) {
            set_reason(c, V_ERROR, "%s", why ? why : "file could not be read");
        } else if (lrc < 0) {
            set_reason(c, V_FAIL, "%s", why ? why : "file refused");
        } else if (kind == EV_FILE_PDF) {
            s->pdf = item;
            item = NULL;
        } else if (!image_fits_a_request(w->p, item, c)) {
            /* c says why: no provider could ever be sent it. */
        } else {
            s->images[s->n_images++] = item;
            item = NULL;
        }
        free(why);
        why = NULL;
        ev_files_item_free(item);
    }
    PQclear(meta);
    if (rc < 0)
        return rc;

    /* The PDF must open: not encrypted, not damaged, within the page limit,
     * and within the parse budget (see sandbox.h). */
    if (s->pdf && pc->verdict == V_NONE) {
        size_t len = 0;
        const unsigned char *data = ev_files_item_data(s->pdf, &len);
        ev_sandbox_pdf_t res;
        int prc = ev_sandbox_pdf(w->p->sandbox, &res, data, len, fo->pdf_max_pages,
                                 PDF_TEXT_MAX_BYTES, PDF_PAGE_TEXT_MAX_BYTES, &why);
        ev_stats_record_parse(w->p->stats, res.usage.wall_ms, res.usage.cpu_us,
                              res.usage.limit_killed);
        if (prc == 0) {
            s->pdf_text = res.text;
            res.text = NULL;
        } else {
            /* A busy machine or a lost helper is not the file's fault. */
            bool ours = prc == EV_ETIMEOUT || prc == EV_EIO;
            set_reason(pc, ours ? V_ERROR : V_FAIL, "%s", why ? why : "PDF cannot be processed");
        }
        ev_sandbox_pdf_clear(&res);
        free(why);
        why = NULL;
    }
    if (n_pdf == 0) {
        if (s->require_pdf)
            set_reason(pc, V_FAIL, "a PDF is required for this event but none was attached");
        else
            set_reason(pc, V_SKIPPED, "no PDF attached (optional for this event)");
    }
    if (n_img == 0) {
        if (s->require_image)
            set_reason(ic, V_FAIL, "an image is required for this event but none was attached");
        else
            set_reason(ic, V_SKIPPED, "no image attached (optional for this event)");
    }
    if (!w->p->cfg->image_split_requests && ic->verdict == V_NONE)
        images_fit_one_request(w->p, s, ic);
    return 0;
}

/* ---- cache ---- */

static void hash_field(ev_hash_sha256_t *h, const char *s)
{
    const char *v = s ? s : "";
    ev_hash_sha256_update(h, v, strlen(v) + 1); /* the NUL separates fields */
}

/* The verdict cache key: the question (check, prompt version, event), the
 * models configured to answer it, and everything the model is shown, by
 * content hash. Changing a model therefore never reuses the old model's
 * verdicts. */
static void cache_key(char out[65], const ev_config_t *cfg, ev_check_t check, const sub_t *s)
{
    ev_hash_sha256_t h;
    unsigned char digest[32];
    char ver[16];
    snprintf(ver, sizeof(ver), "v%d", EV_PROMPT_VERSION);
    ev_hash_sha256_init(&h);
    hash_field(&h, ver);
    hash_field(&h, ev_check_name(check));
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        const ev_provider_config_t *pc = &cfg->providers[i];
        /* Every model that may answer, in order: a new list is a new question. */
        bool image = check == EV_CHECK_IMAGE;
        size_t n = !pc->api_key ? 0 : image ? pc->n_vision_models : pc->n_models;
        for (size_t m = 0; m < n; m++)
            hash_field(&h, image ? pc->vision_models[m] : pc->models[m]);
        hash_field(&h, "");
    }
    hash_field(&h, s->event_name);
    hash_field(&h, s->theme);
    hash_field(&h, s->rules);
    /* The PDF check asks about the event and the document alone, so a
     * re-upload of the same PDF is answered from the cache. */
    if (check != EV_CHECK_PDF) {
        hash_field(&h, s->title);
        hash_field(&h, s->description);
    }
    if (check == EV_CHECK_THEME)
        hash_field(&h, s->pdf_text);
    if (check == EV_CHECK_PDF)
        hash_field(&h, s->pdf ? ev_files_item_sha256(s->pdf) : "");
    if (check == EV_CHECK_IMAGE)
        for (int i = 0; i < s->n_images; i++)
            hash_field(&h, ev_files_item_sha256(s->images[i]));
    ev_hash_sha256_final(&h, digest);
    ev_hash_to_hex(out, digest, sizeof(digest));
}

static int cache_get(ev_db_t *db, check_result_t *c)
{
    const char *params[] = {c->cache_key};
    PGresult *r = NULL;
    int rc = ev_db_exec(db, &r,
                        "SELECT verdict, score, reason, provider, model FROM verdict_cache "
                        "WHERE cache_key = $1",
                        1, params);
    if (rc < 0)
        return rc;
    if (PQntuples(r) == 1) {
        c->verdict = PQgetvalue(r, 0, 0)[0] == 'p' ? V_PASS : V_FAIL;
        c->score = PQgetisnull(r, 0, 1) ? -1 : strtod(PQgetvalue(r, 0, 1), NULL);
        snprintf(c->reason, sizeof(c->reason), "%s", PQgetvalue(r, 0, 2));
        snprintf(c->model, sizeof(c->model), "%s", PQgetvalue(r, 0, 4));
        const ev_provider_ops_t *ops = ev_providers_find(PQgetvalue(r, 0, 3));
        c->provider = ops ? ops->name : "gemini"; /* a static name, as c->provider must be */
        c->cached = true;
    }
    PQclear(r);
    return 0;
}

static int cache_put(ev_db_t *db, const check_result_t *c)
{
    char score[32];
    snprintf(score, sizeof(score), "%.6f", c->score);
    char *reason = ev_db_clip_text(c->reason, REASON_MAX);
    const char *params[] = {c->cache_key, verdict_name(c->verdict), score, reason, c->provider,
                            c->model};
    int rc = ev_db_exec(db, NULL,
                        "INSERT INTO verdict_cache (cache_key, verdict, score, reason, provider, "
                        "model) VALUES ($1, $2, $3::float8, $4, $5, $6) "
                        "ON CONFLICT (cache_key) DO NOTHING",
                        6, params);
    free(reason);
    return rc;
}

/* ---- LLM checks ---- */

static bool stopped(const atomic_bool *stop)
{
    return stop && atomic_load(stop);
}

/* Spreads the first call of submissions claimed together (once per
 * submission). Returns 0 or EV_ESHUTDOWN. */
static int stagger_once(ev_pipeline_t *p, bool *staggered, const atomic_bool *stop)
{
    if (*staggered)
        return 0;
    *staggered = true;
    int64_t ms = ev_rand_range(p->cfg->stagger_min_ms, p->cfg->stagger_max_ms);
    for (int64_t left = ms; left > 0 && !stopped(stop); left -= 50)
        ev_clock_sleep_us(ev_clock_system(), EV_MIN(left, 50) * 1000);
    return stopped(stop) ? EV_ESHUTDOWN : 0;
}

/* Runs one LLM check through the router (or the cache). Returns 0, or
 * EV_ESHUTDOWN / a database code. */
/* Asks one question about `media` (n of them) through the router. */
static int ask(ev_pipeline_worker_t *w, ev_check_t check, const sub_t *s,
               const ev_llm_media_t *media, size_t n_media, ev_router_result_t *res,
               const atomic_bool *stop)
{
    ev_prompt_input_t in = {
        .event_name = s->event_name,
        .theme = s->theme,
        .rules = s->rules,
        .title = s->title,
        .description = s->description,
        .pdf_text = s->pdf_text,
        .image_count = check == EV_CHECK_IMAGE ? (int)n_media : s->n_images,
    };
    ev_llm_request_t req[EV_PROVIDER_COUNT];
    char *user[EV_PROVIDER_COUNT] = {NULL, NULL};
    const ev_llm_request_t *reqp[EV_PROVIDER_COUNT] = {NULL, NULL};
    for (int pi = 0; pi < EV_PROVIDER_COUNT; pi++) {
        /* A provider that takes no PDF reads the extracted text instead. */
        bool pdf_as_text = check == EV_CHECK_PDF && !(ev_providers_get((ev_provider_id_t)pi)->caps &
                                                      EV_PROVIDER_CAP_INLINE_PDF);
        in.pdf_inline = check == EV_CHECK_PDF && !pdf_as_text;
        user[pi] = ev_prompt_user(check, &in);
        req[pi] = (ev_llm_request_t){
            .system_prompt = ev_prompt_system(check),
            .user_text = user[pi],
            .media = pdf_as_text ? NULL : media,
            .media_count = pdf_as_text ? 0 : n_media,
            .text_only = check == EV_CHECK_THEME || pdf_as_text,
        };
        reqp[pi] = &req[pi];
    }
    ev_log_ctx_check(ev_check_name(check));
    int rc =
        ev_router_judge(w->p->router, w->http, w->budget, ev_check_name(check), reqp, res, stop);
    ev_log_ctx_check(NULL);
    for (int pi = 0; pi < EV_PROVIDER_COUNT; pi++)
        free(user[pi]);
    return rc;
}

/* Adds one router call's figures to the check's. */
static void add_call(check_result_t *c, const ev_router_result_t *res)
{
    c->http_attempts += res->http_attempts;
    c->latency_ms += res->latency_ms;
    c->tokens_in += res->tokens_in;
    c->tokens_out += res->tokens_out;
    if (res->provider >= 0) {
        c->provider = ev_provider_name((ev_provider_id_t)res->provider);
        snprintf(c->model, sizeof(c->model), "%s", res->model);
    }
}

/*
 * Images that do not fit one request are judged in consecutive parts, each
 * its own request; the check passes when every part passes (score: the
 * lowest), fails with the first failing part's reason, and is an error when
 * a part could not be judged (its remaining parts are not asked).
 */
static int image_check_in_parts(ev_pipeline_worker_t *w, ev_db_t *db, sub_t *s,
                                const ev_llm_media_t *media, const int ends[], int nb,
                                const atomic_bool *stop)
{
    check_result_t *c = &s->checks[EV_CHECK_IMAGE];
    int n = ends[nb - 1], from = 0;
    double score = 1.0;
    c->http_attempts = 0;
    c->latency_ms = c->tokens_in = c->tokens_out = 0;
    for (int k = 0; k < nb; k++) {
        ev_router_result_t res;
        int rc = ask(w, EV_CHECK_IMAGE, s, media + from, (size_t)(ends[k] - from), &res, stop);
        add_call(c, &res);
        if (rc == EV_ESHUTDOWN || rc == EV_EHELD)
            return rc;
        if (rc != 0) {
            set_reason(c, V_ERROR, "images %d-%d of %d: %s", from + 1, ends[k], n, res.error);
            return 0;
        }
        score = EV_MIN(score, res.verdict.score);
        if (!res.verdict.valid || k == nb - 1) {
            c->score = score;
            if (res.verdict.valid)
                set_reason(c, V_PASS, "%d images judged in %d requests: %s", n, nb,
                           res.verdict.reason);
            else
                set_reason(c, V_FAIL, "images %d-%d of %d: %s", from + 1, ends[k], n,
                           res.verdict.reason);
            return cache_put(db, c);
        }
        from = ends[k];
    }
    return 0;
}

static int llm_check(ev_pipeline_worker_t *w, ev_db_t *db, ev_check_t check, sub_t *s,
                     bool *staggered, const atomic_bool *stop)
{
    ev_pipeline_t *p = w->p;
    check_result_t *c = &s->checks[check];
    c->score = -1;
    int rc = cache_get(db, c); /* c->cache_key was set by keep_earlier_passes() */
    if (rc < 0 || c->cached)
        return rc;

    if ((rc = stagger_once(p, staggered, stop)) < 0)
        return rc;

    ev_llm_media_t media[16];
    size_t n_media = 0;
    if (check == EV_CHECK_PDF) {
        size_t len = 0;
        const unsigned char *data = ev_files_item_data(s->pdf, &len);
        media[n_media++] = (ev_llm_media_t){"application/pdf", data, len};
    } else if (check == EV_CHECK_IMAGE) {
        for (int i = 0; i < s->n_images; i++) {
            size_t len = 0;
            const unsigned char *data = ev_files_item_data(s->images[i], &len);
            media[n_media++] = (ev_llm_media_t){ev_files_item_mime(s->images[i]), data, len};
        }
        int ends[16];
        int nb = image_batches(p, media, (int)n_media, ends);
        if (nb > 1)
            return image_check_in_parts(w, db, s, media, ends, nb, stop);
    }

    ev_router_result_t res;
    rc = ask(w, check, s, media, n_media, &res, stop);
    c->http_attempts = 0;
    c->latency_ms = c->tokens_in = c->tokens_out = 0;
    add_call(c, &res);
    if (rc == EV_ESHUTDOWN || rc == EV_EHELD)
        return rc;
    if (rc == 0) {
        c->score = res.verdict.score;
        set_reason(c, res.verdict.valid ? V_PASS : V_FAIL, "%s", res.verdict.reason);
        return cache_put(db, c);
    }
    set_reason(c, V_ERROR, "%s", res.error);
    return 0;
}

/* ---- several checks in one call (CHECK_MODE=combined) ---- */

/* What a combined answer held: one verdict per check asked, where usable. */
typedef struct combined_answer {
    unsigned asked; /* EV_CHECK_BITs of the question */
    unsigned got;   /* EV_CHECK_BITs whose part is a verdict */
    ev_verdict_t v[EV_CHECK_COUNT];
} combined_answer_t;

/* ev_router_accept_fn for a combined call: {"theme": {...}, "pdf": {...},
 * ...}, each part validated like a verdict of its own. Accepted when at
 * least one part is usable (a missing or malformed part is then asked again
 * on its own, not the whole question). */
static int accept_combined(void *ctx, const char *text, size_t len, char *why, size_t whylen)
{
    combined_answer_t *a = ctx;
    const char *names[EV_CHECK_COUNT];
    int which[EV_CHECK_COUNT];
    size_t n = 0;
    for (int c = 0; c < EV_CHECK_COUNT; c++)
        if (a->asked & EV_CHECK_BIT(c)) {
            which[n] = c;
            names[n++] = ev_check_name((ev_check_t)c);
        }
    ev_verdict_t v[EV_CHECK_COUNT];
    unsigned got = 0;
    int rc = ev_verdict_parse_parts(v, &got, text, len, names, n, why, whylen);
    a->got = 0;
    for (size_t i = 0; i < n; i++)
        if (got & (1u << i)) {
            a->v[which[i]] = v[i];
            a->got |= EV_CHECK_BIT(which[i]);
        }
    return rc;
}

/* The checks still to be asked after the cache (cache hits are decided
 * here). Returns the set, or a negative database code. */
static int checks_to_ask(ev_db_t *db, sub_t *s, unsigned *asked)
{
    *asked = 0;
    for (int c = 0; c < EV_CHECK_COUNT; c++) {
        check_result_t *cr = &s->checks[c];
        if (cr->from_earlier_attempt || cr->verdict != V_NONE)
            continue;
        cr->score = -1;
        int rc = cache_get(db, cr);
        if (rc < 0)
            return rc;
        if (!cr->cached)
            *asked |= EV_CHECK_BIT(c);
    }
    return 0;
}

/* Records the parts a combined call answered; the call's attempts, latency
 * and tokens go on the first of them. Returns 0 or a database code. */
static int take_combined(ev_db_t *db, sub_t *s, const combined_answer_t *a,
                         const ev_router_result_t *res)
{
    bool first = true;
    for (int c = 0; c < EV_CHECK_COUNT; c++) {
        if (!(a->got & EV_CHECK_BIT(c)))
            continue;
        check_result_t *cr = &s->checks[c];
        cr->combined = true;
        if (first) {
            cr->http_attempts = res->http_attempts;
            cr->latency_ms = res->latency_ms;
            cr->tokens_in = res->tokens_in;
            cr->tokens_out = res->tokens_out;
            first = false;
        }
        if (res->provider >= 0) {
            cr->provider = ev_provider_name((ev_provider_id_t)res->provider);
            snprintf(cr->model, sizeof(cr->model), "%s", res->model);
        }
        cr->score = a->v[c].score;
        set_reason(cr, a->v[c].valid ? V_PASS : V_FAIL, "%s", a->v[c].reason);
        int rc = cache_put(db, cr);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/*
 * Asks every check still undecided (two or more) in one call: the PDF goes
 * once (inline to a provider that takes PDFs, else as its text), images in
 * the same call (a provider's vision models). What it answers is decided;
 * what it does not (a missing or malformed part, or no answer at all) is
 * left for the per-check calls. Returns 0, EV_ESHUTDOWN or a database code.
 */
static int combined_checks(ev_pipeline_worker_t *w, ev_db_t *db, sub_t *s, bool *staggered,
                           const atomic_bool *stop)
{
    ev_pipeline_t *p = w->p;
    combined_answer_t ans;
    memset(&ans, 0, sizeof(ans));
    int rc = checks_to_ask(db, s, &ans.asked);
    if (rc < 0 || __builtin_popcount(ans.asked) < 2)
        return rc;
    if ((rc = stagger_once(p, staggered, stop)) < 0)
        return rc;

    const char *keys[EV_CHECK_COUNT];
    size_t nkeys = 0;
    for (int c = 0; c < EV_CHECK_COUNT; c++)
        if (ans.asked & EV_CHECK_BIT(c))
            keys[nkeys++] = ev_check_name((ev_check_t)c);
    ev_prompt_input_t in = {.event_name = s->event_name,
                            .theme = s->theme,
                            .rules = s->rules,
                            .title = s->title,
                            .description = s->description,
                            .pdf_text = s->pdf_text,
                            .image_count = s->n_images};
    char *system = ev_prompt_combined_system(ans.asked);
    ev_llm_media_t media[EV_PROVIDER_COUNT][17];
    ev_llm_request_t req[EV_PROVIDER_COUNT];
    char *user[EV_PROVIDER_COUNT];
    const ev_llm_request_t *reqp[EV_PROVIDER_COUNT];
    for (int pi = 0; pi < EV_PROVIDER_COUNT; pi++) {
        size_t n = 0, len = 0;
        in.pdf_inline = (ans.asked & EV_CHECK_BIT(EV_CHECK_PDF)) && s->pdf &&
                        (ev_providers_get((ev_provider_id_t)pi)->caps & EV_PROVIDER_CAP_INLINE_PDF);
        if (in.pdf_inline) {
            const unsigned char *data = ev_files_item_data(s->pdf, &len);
            media[pi][n++] = (ev_llm_media_t){"application/pdf", data, len};
        }
        for (int i = 0; (ans.asked & EV_CHECK_BIT(EV_CHECK_IMAGE)) && i < s->n_images; i++) {
            const unsigned char *data = ev_files_item_data(s->images[i], &len);
            media[pi][n++] = (ev_llm_media_t){ev_files_item_mime(s->images[i]), data, len};
        }
        user[pi] = ev_prompt_combined_user(ans.asked, &in);
        req[pi] = (ev_llm_request_t){.system_prompt = system,
                                     .user_text = user[pi],
                                     .media = media[pi],
                                     .media_count = n,
                                     .text_only = n == 0,
                                     .answer_keys = keys,
                                     .answer_key_count = nkeys};
        reqp[pi] = &req[pi];
    }

    ev_log_ctx_check("combined");
    ev_router_result_t res;
    rc = ev_router_ask(p->router, w->http, w->budget, "combined", reqp, accept_combined, &ans, &res,
                       stop);
    ev_log_ctx_check(NULL);
    for (int pi = 0; pi < EV_PROVIDER_COUNT; pi++)
        free(user[pi]);
    free(system);
    if (rc == EV_ESHUTDOWN)
        return rc;
    return rc == 0 ? take_combined(db, s, &ans, &res) : 0;
}

/* ---- the whole submission ---- */

/*
 * Computes each undecided check's question (cache key) now that every file
 * has been loaded and checked locally. A pass recorded by an earlier attempt
 * for the very same question stands and is not asked again (nor rewritten);
 * anything else is decided afresh: errors are retried, a skip is a free
 * local decision, and a file replaced since the earlier pass makes a new
 * question.
 */
static void keep_earlier_passes(ev_pipeline_t *p, sub_t *s)
{
    for (int c = 0; c < EV_CHECK_COUNT; c++) {
        check_result_t *cr = &s->checks[c];
        if (cr->verdict != V_NONE)
            continue;
        cache_key(cr->cache_key, p->cfg, (ev_check_t)c, s);
        if (cr->earlier_key[0] && strcmp(cr->earlier_key, cr->cache_key) == 0) {
            cr->from_earlier_attempt = true;
            cr->verdict = V_PASS;
        }
    }
}

static ev_stats_status_t stats_status(const char *status)
{
    if (strcmp(status, "validated") == 0)
        return EV_STATS_STATUS_VALIDATED;
    if (strcmp(status, "rejected") == 0)
        return EV_STATS_STATUS_REJECTED;
    if (strcmp(status, "needs_review") == 0)
        return EV_STATS_STATUS_NEEDS_REVIEW;
    if (strcmp(status, "failed") == 0)
        return EV_STATS_STATUS_FAILED;
    return EV_STATS_STATUS_REQUEUED;
}

/* "pdf: reason; image: reason" for every check with verdict v. */
static void summarise(char *buf, size_t n, const sub_t *s, verdict_t v)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int c = 0; c < EV_CHECK_COUNT && used < n; c++) {
        if (s->checks[c].verdict != v || s->checks[c].from_earlier_attempt)
            continue;
        int k = snprintf(buf + used, n - used, "%s%s: %s", used ? "; " : "",
                         ev_check_name((ev_check_t)c), s->checks[c].reason);
        if (k < 0)
            break;
        used += (size_t)k;
    }
}

static int process(ev_pipeline_worker_t *w, ev_db_t *db, const ev_job_t *job, sub_t *s,
                   const atomic_bool *stop)
{
    ev_pipeline_t *p = w->p;
    const int64_t started_us = ev_clock_now_us(ev_clock_system());
    /* Shutting down: leave the job untouched for the pool to release, even
     * when local checks alone could decide it. */
    if (stopped(stop))
        return EV_ESHUTDOWN;
    int rc = load_submission(db, job, s);
    if (rc < 0)
        return rc;
    if ((rc = load_files(w, db, job, s)) < 0)
        return rc;

    keep_earlier_passes(p, s);
    bool local_fail = false, local_error = false;
    for (int c = 0; c < EV_CHECK_COUNT; c++) {
        local_fail |= s->checks[c].verdict == V_FAIL;
        local_error |= s->checks[c].verdict == V_ERROR;
    }

    /* With every provider disabled by a configuration error nothing can be
     * judged: give the submission back without spending its attempt (serve
     * stops within a second, see ev_pipeline_usable) instead of recording
     * errors that would burn the backlog into needs_review. */
    bool need_llm = false;
    for (int c = 0; c < EV_CHECK_COUNT; c++)
        need_llm |= !local_fail && !local_error && !s->checks[c].from_earlier_attempt &&
                    s->checks[c].verdict == V_NONE;
    if (need_llm && !ev_pipeline_usable(p)) {
        rc = ev_queue_release(db, job);
        for (int i = 0; i < 20 && !stopped(stop); i++)
            ev_clock_sleep_us(ev_clock_system(), 50000);
        return rc;
    }

    /* An event whose budget is spent gets no more calls: the submission
     * waits (local checks alone may still reject it above). */
    if (need_llm && ev_spend_allow_event(p->spend, job->event_id) < 0)
        return EV_EHELD;

    /* A local fail already rejects the submission: asking a model anything
     * more would be money spent on a foregone verdict. */
    bool staggered = false;
    if (!local_fail && !local_error && strcmp(p->cfg->check_mode, "combined") == 0 &&
        (rc = combined_checks(w, db, s, &staggered, stop)) < 0)
        return rc;
    for (int c = 0; c < EV_CHECK_COUNT; c++) {
        check_result_t *cr = &s->checks[c];
        if (cr->from_earlier_attempt || cr->verdict != V_NONE)
            continue;
        if (local_fail) {
            set_reason(cr, V_SKIPPED,
                       "not sent to a model: the submission failed a local file check");
            cr->cache_key[0] = '\0';
            continue;
        }
        /* A local check that could not finish (a busy parse sandbox, an
         * unreadable upload directory) is retried with the submission; a
         * model asked now would judge it without its files. */
        if (local_error) {
            set_reason(cr, V_SKIPPED,
                       "not sent to a model yet: a local file check could not finish");
            cr->cache_key[0] = '\0';
            continue;
        }
        if (stopped(stop))
            return EV_ESHUTDOWN;
        if ((rc = llm_check(w, db, (ev_check_t)c, s, &staggered, stop)) < 0)
            return rc;
    }

    bool any_fail = false, any_error = false;
    for (int c = 0; c < EV_CHECK_COUNT; c++) {
        check_result_t *cr = &s->checks[c];
        any_fail |= cr->verdict == V_FAIL;
        any_error |= cr->verdict == V_ERROR;
        if (cr->from_earlier_attempt)
            continue;
        if ((rc = write_result(db, job, (ev_check_t)c, cr, w->budget)) < 0)
            return rc;
        if (p->stats)
            ev_stats_record_check(p->stats, ev_check_name((ev_check_t)c),
                                  verdict_name(cr->verdict));
    }

    char last_error[LAST_ERROR_MAX];
    const char *status = NULL;
    if (any_fail) {
        summarise(last_error, sizeof(last_error), s, V_FAIL);
        status = "rejected";
        rc = ev_queue_complete(db, job, status, last_error);
    } else if (any_error) {
        summarise(last_error, sizeof(last_error), s, V_ERROR);
        rc = ev_queue_requeue(db, job, p->cfg->max_attempts, p->cfg->requeue_base_ms,
                              p->cfg->requeue_max_ms, last_error, &status);
    } else {
        status = "validated";
        rc = ev_queue_complete(db, job, status, NULL);
    }
    if (rc < 0)
        return rc;
    int calls = ev_budget_used(w->budget);
    if (p->stats) {
        ev_stats_record_submission(p->stats, stats_status(status), calls);
        if (ev_budget_refusals(w->budget) > 0)
            ev_stats_record_budget_exhausted(p->stats);
    }
    int64_t llm_ms = 0;
    for (int c = 0; c < EV_CHECK_COUNT; c++)
        llm_ms += s->checks[c].latency_ms;
    char calls_s[16], latency_s[32], total_s[32];
    int64_t total_ms = (ev_clock_now_us(ev_clock_system()) - started_us) / 1000;
    ev_stats_record_submission_duration(p->stats, total_ms);
    snprintf(calls_s, sizeof(calls_s), "%d", calls);
    snprintf(latency_s, sizeof(latency_s), "%lld", (long long)llm_ms);
    snprintf(total_s, sizeof(total_s), "%lld", (long long)total_ms);
    ev_log_kv(any_error ? EV_LOG_WARN : EV_LOG_INFO, "submission processed", "status", status,
              "theme", verdict_name(s->checks[EV_CHECK_THEME].verdict), "pdf",
              verdict_name(s->checks[EV_CHECK_PDF].verdict), "image",
              verdict_name(s->checks[EV_CHECK_IMAGE].verdict), "api_calls", calls_s,
              "llm_latency_ms", latency_s, "latency_ms", total_s, NULL);
    return 0;
}

static int p_hold_ms(const ev_pipeline_t *p)
{
    return p->cfg->hold_retry_ms;
}

void ev_pipeline_set_spend(ev_pipeline_t *p, struct ev_spend *spend)
{
    p->spend = spend;
    ev_router_set_spend(p->router, spend);
}

int ev_pipeline_process(ev_pipeline_worker_t *w, ev_db_t *db, const ev_job_t *job,
                        const atomic_bool *stop)
{
    sub_t s;
    memset(&s, 0, sizeof(s));
    ev_budget_reset(w->budget);
    ev_log_ctx_submission(job->submission_id);
    ev_log_ctx_attempt(job->attempt);
    if (w->p->stats)
        ev_stats_worker_busy_add(w->p->stats, 1);

    ev_budget_set_event(w->budget, job->event_id);
    int rc = process(w, db, job, &s, stop);
    if (rc == EV_EHELD) {
        /* Held by a spend limit (or an operator): back to pending without
         * spending the attempt; verdicts already given are in the cache. */
        rc = ev_queue_defer(
            db, job, p_hold_ms(w->p),
            "waiting: provider calls are held (operator pause, emergency stop or spend limit)");
        ev_log(EV_LOG_DEBUG, "submission held: back to pending for %d ms", p_hold_ms(w->p));
        if (rc == 0 && w->p->stats)
            ev_stats_record_submission(w->p->stats, EV_STATS_STATUS_REQUEUED, 0);
    }
    if (rc == EV_ELEASE)
        ev_log(EV_LOG_WARN, "lease lost: another worker owns this submission now; stopping");
    else if (rc == EV_EDB)
        ev_log(EV_LOG_ERROR, "database error while processing: %s", ev_db_error(db));

    if (w->p->stats)
        ev_stats_worker_busy_add(w->p->stats, -1);
    sub_free(&s);
    ev_log_ctx_submission(0);
    ev_log_ctx_attempt(-1);
    /* A plain database error (EV_EDB, not a lost connection) goes back to
     * the pool as it is: the pool requeues with backoff and spends the
     * attempt, so a deterministic error cannot loop claim/release forever. */
    return rc;
}
