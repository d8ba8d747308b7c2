/*
 * runner.c - the one test main (see runner.h): registration from tables,
 * CUnit's basic runner, and one exit-status rule for every test program.
 *
 * Single-threaded.
 */
#include "runner.h"

#include "ev/sandbox.h"

#include <CUnit/Basic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* True when "suite/test" contains the filter (or there is none). */
static bool wanted(const char *filter, const char *suite, const char *test)
{
    if (!filter || !*filter)
        return true;
    char full[512];
    snprintf(full, sizeof full, "%s/%s", suite, test);
    return strstr(full, filter) != NULL;
}

/* Registers every suite and test; 0, or -1 after printing what failed. */
static int register_all(const ev_test_suite_t *suites, const char *filter, unsigned *active)
{
    *active = 0;
    for (const ev_test_suite_t *s = suites; s->name; s++) {
        CU_pSuite cs =
            CU_add_suite_with_setup_and_teardown(s->name, s->init, s->clean, s->setup, s->teardown);
        if (!cs) {
            fprintf(stderr, "runner: cannot register suite '%s': %s\n", s->name,
                    CU_get_error_msg());
            return -1;
        }
        unsigned in_suite = 0;
        for (const ev_test_t *t = s->tests; t && t->name; t++) {
            CU_pTest ct = CU_add_test(cs, t->name, t->fn);
            if (!ct) {
                fprintf(stderr, "runner: cannot register test '%s/%s': %s\n", s->name, t->name,
                        CU_get_error_msg());
                return -1;
            }
            bool on = wanted(filter, s->name, t->name);
            if (!on)
                CU_set_test_active(ct, CU_FALSE);
            in_suite += on;
        }
        /* A suite with nothing to run must not pay for its setup. */
        if (in_suite == 0)
            CU_set_suite_active(cs, CU_FALSE);
        *active += in_suite;
    }
    return 0;
}

int ev_test_run(int argc, char **argv, const ev_test_suite_t *suites)
{
    /* A test that parses PDFs re-executes itself as the parse server. */
    if (argc >= 2 && strcmp(argv[1], EV_SANDBOX_SERVER_ARG) == 0)
        return ev_sandbox_server_main(argc, argv);
    const char *filter = argc > 1 ? argv[1] : getenv("EV_TEST_FILTER");
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "runner: cannot initialise CUnit: %s\n", CU_get_error_msg());
        return 2;
    }
    unsigned active = 0;
    if (register_all(suites, filter, &active) < 0) {
        CU_cleanup_registry();
        return 2;
    }
    if (active == 0) {
        fprintf(stderr, "runner: no test matches '%s'\n", filter ? filter : "");
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned ran = CU_get_number_of_tests_run();
    unsigned tests_failed = CU_get_number_of_tests_failed();
    unsigned asserts_failed = CU_get_number_of_failures();
    unsigned suites_failed = CU_get_number_of_suites_failed();
    /* Tests of a suite whose setup failed never ran: they count as failed. */
    unsigned not_run = active > ran ? active - ran : 0;
    unsigned failed = tests_failed + not_run;
    printf("\n%u passed, %u failed\n", ran - tests_failed, failed);
    if (suites_failed)
        printf("runner: %u suite(s) failed their setup or teardown\n", suites_failed);
    CU_cleanup_registry();
    return (failed || asserts_failed || suites_failed || ran == 0) ? 1 : 0;
}
