/*
 * runner.h - the one test main of every CUnit test program.
 *
 * Each test program lists its suites and tests in tables and ends with
 * EV_TEST_MAIN(suites). The runner registers them, runs them in CUnit's
 * verbose mode and decides the exit status in one place, so no program can
 * pass by accident:
 *
 *   exit 0  every suite was registered, every suite's setup and teardown
 *           succeeded, at least one test ran, and no assertion failed;
 *   exit 1  a test failed, or a suite's setup (init) or teardown failed
 *           (the tests of a suite whose setup failed never ran);
 *   exit 2  the registry or a table could not be set up, or a filter
 *           matched no test.
 *
 * It ends with the plain line "N passed, N failed" (tests, not assertions).
 *
 * Filter: `test_x PATTERN` runs only the tests whose "suite/test name"
 * contains PATTERN (EV_TEST_FILTER in the environment does the same).
 *
 * Single-threaded: called once from main.
 */
#ifndef EV_TEST_RUNNER_H
#define EV_TEST_RUNNER_H

#include <CUnit/CUnit.h>
#include <stddef.h>

/* One test: its name as printed and its function. Tables end with
 * EV_TEST_END. */
typedef struct ev_test {
    const char *name;
    CU_TestFunc fn;
} ev_test_t;

/* One suite: optional per-suite init/clean, optional per-test setup and
 * teardown, and its tests. Tables end with EV_SUITE_END. */
typedef struct ev_test_suite {
    const char *name;
    CU_InitializeFunc init;
    CU_CleanupFunc clean;
    const ev_test_t *tests;
    CU_SetUpFunc setup;
    CU_TearDownFunc teardown;
} ev_test_suite_t;

#define EV_TEST_END                                                                                \
    {                                                                                              \
        NULL, NULL                                                                                 \
    }
#define EV_SUITE_END                                                                               \
    {                                                                                              \
        NULL, NULL, NULL, NULL, NULL, NULL                                                         \
    }

/* Registers and runs suites (terminated by EV_SUITE_END); returns the exit
 * status described above. */
int ev_test_run(int argc, char **argv, const ev_test_suite_t *suites);

#define EV_TEST_MAIN(suites)                                                                       \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        return ev_test_run(argc, argv, suites);                                                    \
    }

#endif
