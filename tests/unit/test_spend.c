/*
 * test_spend.c - prices: the built-in table, MODEL_PRICES overrides and
 * what a call costs (cached input billed at its own rate).
 */
#include "ev/error.h"
#include "ev/spend.h"
#include "runner.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static void test_builtin_prices_cover_both_providers(void)
{
    size_t n = 0;
    const ev_price_row_t *rows = ev_price_table(&n);
    int gemini = 0, groq = 0;
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT(rows[i].price.input > 0 && rows[i].price.output > 0);
        gemini += strcmp(rows[i].provider, "gemini") == 0;
        groq += strcmp(rows[i].provider, "groq") == 0;
    }
    CU_ASSERT(gemini > 0 && groq > 0);
    ev_price_t p;
    CU_ASSERT_TRUE(ev_price_lookup(NULL, "gemini-2.5-flash", &p));
    CU_ASSERT_DOUBLE_EQUAL(p.input, 0.30, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(p.output, 2.50, 1e-12);
    CU_ASSERT_FALSE(ev_price_lookup(NULL, "no-such-model", &p));
    CU_ASSERT_DOUBLE_EQUAL(p.input, 0, 1e-12);
}

static const char *no_env(const char *name, void *ctx)
{
    (void)name;
    (void)ctx;
    return NULL;
}

/* Every model the service uses by default has a price, so a spend limit
 * counts every default call (a new default without a row fails here). */
static void test_every_default_model_is_priced(void)
{
    ev_config_t *cfg = NULL;
    char err[256] = "";
    CU_ASSERT_EQUAL_FATAL(ev_config_load(&cfg, no_env, NULL, err, sizeof(err)), 0);
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        const ev_provider_config_t *pc = &cfg->providers[p];
        for (size_t m = 0; m < pc->n_models + pc->n_vision_models; m++) {
            const char *model =
                m < pc->n_models ? pc->models[m] : pc->vision_models[m - pc->n_models];
            ev_price_t price;
            bool known = ev_price_lookup(NULL, model, &price);
            if (!known)
                fprintf(stderr, "default model %s has no built-in price\n", model);
            CU_ASSERT_TRUE(known);
        }
    }
    ev_config_free(cfg);
}

static void test_cost_is_tokens_times_price(void)
{
    ev_price_t p = {0.30, 2.50, 0.03};
    /* 1050 prompt tokens, 198 output: 1050 x 0.30 + 198 x 2.50 micro-dollars. */
    CU_ASSERT_DOUBLE_EQUAL(ev_price_cost(&p, 1050, 0, 198), 0.00081, 1e-12);
    /* 1000 of 2000 prompt tokens from the cache. */
    CU_ASSERT_DOUBLE_EQUAL(ev_price_cost(&p, 2000, 1000, 0), (1000 * 0.30 + 1000 * 0.03) / 1e6,
                           1e-12);
    /* No published discount: cached input costs what input costs. */
    ev_price_t flat = {0.5, 1, -1};
    CU_ASSERT_DOUBLE_EQUAL(ev_price_cost(&flat, 100, 100, 0), 100 * 0.5 / 1e6, 1e-12);
    /* A cached count larger than the prompt is clamped. */
    CU_ASSERT_DOUBLE_EQUAL(ev_price_cost(&p, 10, 50, 0), 10 * 0.03 / 1e6, 1e-12);
}

static void test_overrides(void)
{
    char err[256] = "";
    const char *spec = "my-model=1.5/6,gemini-2.5-flash=0.1/0.2/0.01";
    CU_ASSERT_EQUAL(ev_price_check_overrides(spec, err, sizeof(err)), 0);
    ev_price_t p;
    CU_ASSERT_TRUE(ev_price_lookup(spec, "my-model", &p));
    CU_ASSERT_DOUBLE_EQUAL(p.input, 1.5, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(p.output, 6, 1e-12);
    CU_ASSERT(p.cached_input < 0);
    /* An override wins over the built-in row. */
    CU_ASSERT_TRUE(ev_price_lookup(spec, "gemini-2.5-flash", &p));
    CU_ASSERT_DOUBLE_EQUAL(p.input, 0.1, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(p.cached_input, 0.01, 1e-12);
    /* A prefix of a name is not the name. */
    CU_ASSERT_FALSE(ev_price_lookup(spec, "my-mod", &p));
}

static void test_bad_overrides_refused(void)
{
    const char *bad[] = {"x",      "x=1",     "x=1/",  "=1/2",      "x=-1/2",
                         "x=1/2/", "x=1/2,y", "x=a/b", "x=1/2/3/4", "x=1e9/1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        CU_ASSERT_EQUAL(ev_price_check_overrides(bad[i], err, sizeof(err)), EV_EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "MODEL_PRICES"));
    }
}

static const ev_test_t spend_tests[] = {
    {"built-in prices cover both providers", test_builtin_prices_cover_both_providers},
    {"cost is tokens x price", test_cost_is_tokens_times_price},
    {"every default model is priced", test_every_default_model_is_priced},
    {"overrides", test_overrides},
    {"bad overrides refused", test_bad_overrides_refused},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"spend", NULL, NULL, spend_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
