/*
 * test_tpm.c - the tokens-per-minute meter (GROQ_TPM_LIMIT, GEMINI_TPM_LIMIT).
 *
 * What a user relies on: with a token limit set, the provider never sees
 * more tokens in any minute than it allows (no 429 for tokens), yet the
 * limit is used almost fully once the real usage is known; usage of the same
 * key elsewhere, reported by the provider, is respected. Driven on a fake
 * clock; the contention test runs 8 threads that sleep on it.
 */
#include "ev/clock.h"
#include "ev/error.h"
#include "ev/tpm.h"
#include "ev/util.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

#define SEC 1000000LL

typedef struct {
    ev_fake_clock_t *fc;
    ev_tpm_t *t;
} fixture_t;

static fixture_t make(int64_t limit)
{
    fixture_t f = {0};
    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&f.fc, 1000 * SEC, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_tpm_new(&f.t, limit, 50000, ev_fake_clock_get(f.fc)), 0);
    return f;
}

static void destroy(fixture_t *f)
{
    ev_tpm_free(f->t);
    ev_fake_clock_free(f->fc);
}

static int64_t now(fixture_t *f)
{
    return ev_clock_now_us(ev_fake_clock_get(f->fc));
}

static void test_new_rejects_bad_arguments(void)
{
    ev_tpm_t *t = (ev_tpm_t *)1;
    CU_ASSERT_EQUAL(ev_tpm_new(&t, -1, 1, ev_clock_system()), EV_EINVAL);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_EQUAL(ev_tpm_new(&t, 10, 0, ev_clock_system()), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_tpm_new(&t, 10, 1, NULL), EV_EINVAL);
    ev_tpm_free(NULL);
}

static void test_waits_for_tokens_to_leave_the_window(void)
{
    fixture_t f = make(1000);
    ev_tpm_ticket_t tk;
    int64_t waited = -1;
    int64_t t0 = now(&f);
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 600, 0, -1, NULL, &tk, &waited), 0);
    CU_ASSERT_EQUAL(waited, 0);
    ev_fake_clock_advance(f.fc, 10 * SEC);
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 300, 0, -1, NULL, &tk, &waited), 0);
    CU_ASSERT_EQUAL(waited, 0);
    /* 900 used: 200 more must wait until the first 600 leave (61 s after). */
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 200, 0, 5 * SEC, NULL, &tk, &waited), EV_ELIMIT);
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 200, 0, -1, NULL, &tk, &waited), 0);
    CU_ASSERT(now(&f) >= t0 + 61 * SEC);
    CU_ASSERT(now(&f) < t0 + 62 * SEC);
    ev_tpm_stats_t st;
    ev_tpm_stats(f.t, &st);
    CU_ASSERT_EQUAL(st.used, 500);
    CU_ASSERT_EQUAL(st.waits, 1); /* the refused one was never placed */
    destroy(&f);
}

static void test_stop_and_unlimited(void)
{
    fixture_t f = make(0);
    ev_tpm_ticket_t tk;
    for (int i = 0; i < 100; i++)
        CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 1000000, 0, 0, NULL, &tk, NULL), 0);
    ev_tpm_stats_t st;
    ev_tpm_stats(f.t, &st);
    CU_ASSERT_EQUAL(st.used, 100000000); /* still counted for /stats */
    ev_tpm_set_limit(f.t, 10);
    CU_ASSERT_EQUAL(ev_tpm_limit(f.t), 10);
    atomic_bool stop = true;
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 5, 0, -1, &stop, &tk, NULL), EV_ESHUTDOWN);
    destroy(&f);
}

static void test_settle_replaces_the_estimate(void)
{
    fixture_t f = make(10000);
    ev_tpm_ticket_t tk;
    /* No usage known yet: the whole output allowance is charged. */
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 900, 1024, -1, NULL, &tk, NULL), 0);
    CU_ASSERT_EQUAL(tk.estimate, 1924);
    ev_tpm_settle(f.t, &tk, 600, 40);
    ev_tpm_stats_t st;
    ev_tpm_stats(f.t, &st);
    CU_ASSERT_EQUAL(st.used, 640);
    /* Now the charge follows what calls really use: input at most 10 points
     * over the real/estimated ratio, output twice the average plus 32. */
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 900, 1024, -1, NULL, &tk, NULL), 0);
    CU_ASSERT_EQUAL(tk.estimate, 690 + 112);
    /* A refused call frees its tokens. */
    ev_tpm_settle(f.t, &tk, 0, 0);
    ev_tpm_stats(f.t, &st);
    CU_ASSERT_EQUAL(st.used, 640);
    /* An unknown usage keeps the estimate; a never-charged ticket is ignored. */
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 100, 0, -1, NULL, &tk, NULL), 0);
    ev_tpm_settle(f.t, &tk, -1, 0);
    ev_tpm_ticket_t none = EV_TPM_TICKET_INIT;
    ev_tpm_settle(f.t, &none, 5, 5);
    ev_tpm_stats(f.t, &st);
    CU_ASSERT_EQUAL(st.used, 640 + tk.estimate);
    destroy(&f);
}

/* Waiting calls are served in the order they came: a large call is not
 * starved by small ones that would each fit sooner. */
static void test_waiting_calls_keep_their_order(void)
{
    fixture_t f = make(1000);
    ev_tpm_ticket_t big, small;
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 900, 0, -1, NULL, &big, NULL), 0);
    ev_fake_clock_advance(f.fc, 30 * SEC);
    int64_t t30 = now(&f);
    /* 800 cannot fit until the 900 leaves (61 s after it) ... */
    ev_tpm_stats_t st;
    ev_tpm_stats(f.t, &st);
    CU_ASSERT_EQUAL(st.used, 900);
    /* ... and a 100 asked meanwhile, which would fit now, still fits now:
     * it does not push the 800 back, and the 800 is placed after it. */
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 100, 0, 0, NULL, &small, NULL), 0);
    CU_ASSERT_EQUAL(small.sec, t30 / SEC);
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 800, 0, -1, NULL, &big, NULL), 0);
    CU_ASSERT(now(&f) >= 1000 * SEC + 61 * SEC);
    /* A later 300 cannot jump ahead of the 800: it fits only when the 100 leaves. */
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 300, 0, 0, NULL, &small, NULL), EV_ELIMIT);
    destroy(&f);
}

/* A waiting call starts early when the calls before it turn out smaller
 * than estimated. */
static void test_waiting_call_moves_up(void)
{
    fixture_t f = make(1000);
    ev_tpm_ticket_t first;
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 900, 0, -1, NULL, &first, NULL), 0);
    ev_tpm_settle(f.t, &first, 300, 0); /* it really used 300 */
    ev_tpm_ticket_t next;
    int64_t waited = -1;
    /* 600 (input ratio 1/3 + 0.1 of 1400 = 607) fits beside the 300 now. */
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 1400, 0, -1, NULL, &next, &waited), 0);
    CU_ASSERT_EQUAL(waited, 0);
    destroy(&f);
}

static void test_observe_adds_unseen_usage(void)
{
    fixture_t f = make(6000);
    ev_tpm_ticket_t tk;
    CU_ASSERT_EQUAL(ev_tpm_acquire(f.t, 1000, 0, -1, NULL, &tk, NULL), 0);
    ev_tpm_observe(f.t, 6000, 3000); /* the provider counts 3000: 2000 from elsewhere */
    ev_tpm_observe(f.t, 6000, 4000); /* less than we know: nothing to add */
    ev_tpm_observe(f.t, -1, 10);
    ev_tpm_stats_t st;
    ev_tpm_stats(f.t, &st);
    CU_ASSERT_EQUAL(st.used, 3000);
    CU_ASSERT_EQUAL(st.unseen, 2000);
    destroy(&f);
}

static void test_estimate_counts_text_images_and_pages(void)
{
    static const char pdf[] = "%PDF-1.4\n1 0 obj << /Type /Pages /Count 2 >> endobj\n"
                              "2 0 obj << /Type /Page >> endobj 3 0 obj <</Type/Page>> endobj";
    ev_llm_media_t media[2] = {
        {"application/pdf", (const unsigned char *)pdf, sizeof(pdf) - 1},
        {"image/png", (const unsigned char *)"x", 1},
    };
    ev_llm_request_t req = {.system_prompt = "abc", .user_text = "defghi"};
    int64_t text_only = ev_tpm_estimate_input(&req, 1000, 258);
    req.media = media;
    req.media_count = 2;
    CU_ASSERT_EQUAL(ev_tpm_estimate_input(&req, 1000, 258), text_only + 2 * 258 + 1000);
    req.text_only = true;
    CU_ASSERT_EQUAL(ev_tpm_estimate_input(&req, 1000, 258), text_only);
    req.pdf_text = "0123456789012345678901234567890123456789"; /* 40 bytes: ~14 tokens */
    CU_ASSERT(ev_tpm_estimate_input(&req, 1000, 258) >= text_only + 13);
    CU_ASSERT_EQUAL(ev_tpm_max_output(&req), EV_LLM_DEFAULT_MAX_OUTPUT_TOKENS);
    req.max_output_tokens = 50;
    CU_ASSERT_EQUAL(ev_tpm_max_output(&req), 50);
}

/* ---------- under contention ---------- */

#define NT 8
#define PER_THREAD 300
#define LIMIT 20000

typedef struct {
    fixture_t *f;
    int id;
    int64_t sec[PER_THREAD], cost[PER_THREAD];
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    unsigned seed = (unsigned)w->id * 7919u + 1;
    for (int i = 0; i < PER_THREAD; i++) {
        int64_t in = 200 + rand_r(&seed) % 1800;
        ev_tpm_ticket_t tk;
        EV_ASSERT(ev_tpm_acquire(w->f->t, in, 0, -1, NULL, &tk, NULL) == 0);
        w->sec[i] = tk.sec;
        w->cost[i] = tk.estimate;
    }
    return NULL;
}

static void test_contention_never_exceeds_the_limit_in_any_minute(void)
{
    fixture_t f = make(LIMIT);
    static worker_t w[NT];
    pthread_t th[NT];
    for (int i = 0; i < NT; i++) {
        w[i] = (worker_t){.f = &f, .id = i};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < NT; i++)
        pthread_join(th[i], NULL);
    int64_t first = INT64_MAX, last = INT64_MIN, total = 0;
    for (int i = 0; i < NT; i++)
        for (int k = 0; k < PER_THREAD; k++) {
            first = EV_MIN(first, w[i].sec[k]);
            last = EV_MAX(last, w[i].sec[k]);
            total += w[i].cost[k];
        }
    int64_t span = last - first + 1;
    int64_t *per = ev_calloc((size_t)span, sizeof(int64_t));
    for (int i = 0; i < NT; i++)
        for (int k = 0; k < PER_THREAD; k++)
            per[w[i].sec[k] - first] += w[i].cost[k];
    /* The provider's minute: any 60 consecutive seconds. */
    int64_t worst = 0;
    for (int64_t s = 0; s < span; s++) {
        int64_t sum = 0;
        for (int64_t k = s; k < s + 60 && k < span; k++)
            sum += per[k];
        worst = EV_MAX(worst, sum);
    }
    CU_ASSERT(worst <= LIMIT);
    CU_ASSERT(total > 5 * LIMIT); /* the limit was binding */
    free(per);
    destroy(&f);
}

/* One caller whose demand always exceeds supply (each of its sleeps moves
 * the fake clock exactly as far as it asks, unlike 8 sleepers at once). */
static void test_uses_the_limit_almost_fully(void)
{
    fixture_t f = make(LIMIT);
    unsigned seed = 42;
    int64_t first = INT64_MIN, last = 0, total = 0, first_minute = 0;
    while (first == INT64_MIN || last - first < 600) {
        ev_tpm_ticket_t tk;
        int64_t in = 200 + rand_r(&seed) % 1800;
        CU_ASSERT_EQUAL_FATAL(ev_tpm_acquire(f.t, in, 0, -1, NULL, &tk, NULL), 0);
        if (first == INT64_MIN)
            first = tk.sec;
        last = tk.sec;
        total += tk.estimate;
        if (tk.sec - first < 61)
            first_minute += tk.estimate;
    }
    /* After the first window, the rate is within 60/61 of the limit. */
    double per_min = (double)(total - first_minute) / (double)(last - first - 61 + 1) * 60.0;
    CU_ASSERT(per_min >= 0.95 * LIMIT);
    CU_ASSERT(per_min <= 1.0 * LIMIT);
    destroy(&f);
}

static const ev_test_t tests[] = {
    {"new rejects bad arguments", test_new_rejects_bad_arguments},
    {"waits for tokens to leave the window", test_waits_for_tokens_to_leave_the_window},
    {"stop, and no limit", test_stop_and_unlimited},
    {"settle replaces the estimate", test_settle_replaces_the_estimate},
    {"waiting calls keep their order", test_waiting_calls_keep_their_order},
    {"a waiting call moves up", test_waiting_call_moves_up},
    {"observe adds usage seen by the provider only", test_observe_adds_unseen_usage},
    {"estimate counts text, images and pages", test_estimate_counts_text_images_and_pages},
    {"uses the limit almost fully", test_uses_the_limit_almost_fully},
    {"8 threads never exceed the limit in any minute",
     test_contention_never_exceeds_the_limit_in_any_minute},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"tpm", NULL, NULL, tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
