/*
 * test_prompts.c - prompts quote untrusted text, stay bounded, and always ask
 * for JSON (Groq refuses json_object mode otherwise).
 */
#include "ev/prompts.h"

#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

static void test_every_prompt_names_json(void)
{
    ev_prompt_input_t in = {.event_name = "Hack", .theme = "Rivers", .title = "T"};
    for (int c = 0; c < EV_CHECK_COUNT; c++) {
        CU_ASSERT_PTR_NOT_NULL(strstr(ev_prompt_system((ev_check_t)c), "JSON"));
        char *u = ev_prompt_user((ev_check_t)c, &in);
        CU_ASSERT_PTR_NOT_NULL(strstr(u, "JSON"));
        CU_ASSERT_PTR_NOT_NULL(strstr(u, "Theme: Rivers"));
        CU_ASSERT_PTR_NOT_NULL(strstr(u, "<<<SUBMISSION"));
        free(u);
    }
    CU_ASSERT_STRING_EQUAL(ev_check_name(EV_CHECK_THEME), "theme");
    CU_ASSERT_STRING_EQUAL(ev_check_name(EV_CHECK_PDF), "pdf");
    CU_ASSERT_STRING_EQUAL(ev_check_name(EV_CHECK_IMAGE), "image");
}

static void test_bounded_text(void)
{
    size_t big = 100000;
    char *s = malloc(big + 1);
    memset(s, 'a', big);
    s[big] = '\0';
    ev_prompt_input_t in = {
        .event_name = "E", .theme = "T", .title = "x", .description = s, .pdf_text = s};
    char *theme = ev_prompt_user(EV_CHECK_THEME, &in);
    CU_ASSERT(strlen(theme) < EV_PROMPT_DESCRIPTION_MAX + EV_PROMPT_THEME_PDF_EXCERPT_MAX + 1000);
    char *pdf = ev_prompt_user(EV_CHECK_PDF, &in);
    CU_ASSERT(strlen(pdf) < EV_PROMPT_PDF_TEXT_MAX + 1000);
    in.pdf_inline = true;
    char *pdf_inline = ev_prompt_user(EV_CHECK_PDF, &in);
    CU_ASSERT(strlen(pdf_inline) < 1000);
    free(theme);
    free(pdf);
    free(pdf_inline);
    free(s);
}

static void test_clip_keeps_utf8_whole(void)
{
    char *c = ev_prompt_clip("h\xC3\xA9llo", 2); /* cut would split "é" */
    CU_ASSERT_STRING_EQUAL(c, "h");
    free(c);
    c = ev_prompt_clip(NULL, 5);
    CU_ASSERT_STRING_EQUAL(c, "");
    free(c);
}

static const ev_test_t prompts_tests[] = {
    {"every prompt names JSON", test_every_prompt_names_json},
    {"untrusted text is bounded", test_bounded_text},
    {"clip keeps UTF-8 whole", test_clip_keeps_utf8_whole},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"prompts", NULL, NULL, prompts_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
