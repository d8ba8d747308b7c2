/*
 * test_verdict.c - the model-answer parser never trusts an answer blindly:
 * fences, prose, truncation and wrong types (PROVIDERS.md failure mode 5).
 */
#include "ev/error.h"
#include "ev/verdict.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>
#include "runner.h"

static ev_verdict_t v;
static char why[200];

static int parse(const char *s)
{
    why[0] = '\0';
    return ev_verdict_parse(&v, s, strlen(s), why, sizeof(why));
}

static void test_plain(void)
{
    CU_ASSERT_EQUAL(parse("{\"valid\": true, \"score\": 0.87, \"reason\": \"fits the theme\"}"), 0);
    CU_ASSERT_TRUE(v.valid);
    CU_ASSERT_DOUBLE_EQUAL(v.score, 0.87, 1e-9);
    CU_ASSERT_STRING_EQUAL(v.reason, "fits the theme");
    CU_ASSERT_EQUAL(parse("{\"valid\":false,\"score\":0,\"reason\":\"off topic\"}"), 0);
    CU_ASSERT_FALSE(v.valid);
    CU_ASSERT_EQUAL(parse("{\"valid\":true,\"score\":1,\"reason\":\"integer score\"}"), 0);
    CU_ASSERT_DOUBLE_EQUAL(v.score, 1.0, 1e-9);
}

static void test_fences_and_prose(void)
{
    CU_ASSERT_EQUAL(parse("```json\n{\"valid\": true, \"score\": 0.5, \"reason\": \"ok\"}\n```"),
                    0);
    CU_ASSERT_STRING_EQUAL(v.reason, "ok");
    CU_ASSERT_EQUAL(parse("Sure! Here is my answer:\n{\"valid\": false, \"score\": 0.1, "
                          "\"reason\": \"no\"}\nHope it helps."),
                    0);
    CU_ASSERT_FALSE(v.valid);
    /* Braces and escaped quotes inside the reason do not end the object. */
    CU_ASSERT_EQUAL(parse("{\"valid\": true, \"score\": 0.9, \"reason\": \"uses {curly} "
                          "\\\"quotes\\\" }\"} trailing {"),
                    0);
    CU_ASSERT_STRING_EQUAL(v.reason, "uses {curly} \"quotes\" }");
}

static void test_truncated(void)
{
    CU_ASSERT_EQUAL(parse("{\"valid\": true, \"score\": 0.9, \"reason\": \"the submission"),
                    EV_EPARSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "truncated"));
    CU_ASSERT_EQUAL(parse("{\"valid\": true, \"score\": 0.99999999999999999999999999999999999999"),
                    EV_EPARSE);
    CU_ASSERT_EQUAL(parse(""), EV_EPARSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "empty"));
    CU_ASSERT_EQUAL(parse("I cannot help with that."), EV_EPARSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "no JSON object"));
}

static void test_wrong_types(void)
{
    CU_ASSERT_EQUAL(parse("{\"valid\": \"true\", \"score\": 0.9, \"reason\": \"x\"}"), EV_EPARSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'valid'"));
    CU_ASSERT_EQUAL(parse("{\"valid\": true, \"score\": \"0.9\", \"reason\": \"x\"}"), EV_EPARSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'score'"));
    CU_ASSERT_EQUAL(parse("{\"valid\": true, \"score\": 1.5, \"reason\": \"x\"}"), EV_EPARSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "outside 0..1"));
    CU_ASSERT_EQUAL(parse("{\"valid\": true, \"score\": -0.1, \"reason\": \"x\"}"), EV_EPARSE);
    CU_ASSERT_EQUAL(parse("{\"valid\": true, \"score\": 0.2, \"reason\": 7}"), EV_EPARSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'reason'"));
    CU_ASSERT_EQUAL(parse("{\"valid\": true, \"score\": 0.2, \"reason\": \"\"}"), EV_EPARSE);
    CU_ASSERT_EQUAL(parse("{\"valid\": true, \"score\": 0.2}"), EV_EPARSE);
    CU_ASSERT_EQUAL(parse("{\"valid\": null, \"score\": 0.2, \"reason\": \"x\"}"), EV_EPARSE);
    CU_ASSERT_EQUAL(parse("{valid: true}"), EV_EPARSE);
}

static void test_long_reason_cut_on_char_boundary(void)
{
    static char buf[4000];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "%s",
                                "{\"valid\": true, \"score\": 0.5, \"reason\": \"");
    for (int i = 0; i < 700; i++) { /* 700 x "é" = 1400 bytes */
        buf[n++] = (char)0xC3;
        buf[n++] = (char)0xA9;
    }
    snprintf(buf + n, sizeof(buf) - n, "%s", "\"}");
    CU_ASSERT_EQUAL(parse(buf), 0);
    size_t rl = strlen(v.reason);
    CU_ASSERT(rl <= EV_VERDICT_REASON_MAX);
    CU_ASSERT_EQUAL(rl % 2, 0);
}

/* {"valid":false,...,"valid":true} says both: a bad answer, never "last key wins". */
static void test_duplicate_keys_are_ambiguous(void)
{
    CU_ASSERT_EQUAL(parse("{\"valid\":false,\"score\":0.1,\"reason\":\"off\",\"valid\":true}"),
                    EV_EPARSE);
    CU_ASSERT_STRING_EQUAL(why, "answer repeats a field (ambiguous)");
    /* The same key spelled with an escape is the same key. */
    CU_ASSERT_EQUAL(parse("{\"valid\":false,\"score\":0.1,\"reason\":\"x\",\"\\u0076alid\":true}"),
                    EV_EPARSE);
    CU_ASSERT_EQUAL(parse("{\"valid\":true,\"score\":1,\"reason\":\"a\",\"reason\":\"b\"}"),
                    EV_EPARSE);
    /* Repeats inside a nested value are not top-level fields. */
    CU_ASSERT_EQUAL(parse("{\"valid\":true,\"score\":1,\"reason\":\"ok\",\"extra\":"
                          "{\"a\":1,\"a\":2},\"list\":[{\"valid\":1},{\"valid\":2}]}"),
                    0);
    CU_ASSERT_TRUE(v.valid);
}

/* A reason is stored and shown: no terminal escapes, no control characters. */
static void test_reason_is_cleaned(void)
{
    CU_ASSERT_EQUAL(parse("{\"valid\":true,\"score\":1,\"reason\":\"\\u001b[31mRED\\u001b[0m "
                          "fits\\n\\nthe\\ttheme\\u202e gnol\\u0007 \\u001b]0;pwned\\u0007ok"
                          "\\u009b2Jdone\"}"),
                    0);
    CU_ASSERT_STRING_EQUAL(v.reason, "RED fits the theme gnol okdone");
    CU_ASSERT_EQUAL(parse("{\"valid\":true,\"score\":1,\"reason\":\"\\u001b[2J\\n\\t\"}"),
                    EV_EPARSE);
    CU_ASSERT_STRING_EQUAL(why, "field 'reason' has no printable text");
    /* Invalid UTF-8 (a stray byte, an overlong form) shows as U+FFFD. */
    CU_ASSERT_EQUAL(parse("{\"valid\":true,\"score\":1,\"reason\":\"a\xff"
                          "b\xc0\xaf"
                          "c\"}"),
                    0);
    CU_ASSERT_STRING_EQUAL(v.reason, "a\xef\xbf\xbd"
                                     "b\xef\xbf\xbd\xef\xbf\xbd"
                                     "c");
}

/* CHECK_MODE=combined: one verdict per part, each held to the single
 * verdict's rules; a bad part leaves the others usable. */
static void test_parts(void)
{
    static const char *const names[] = {"theme", "pdf", "image"};
    ev_verdict_t pv[3];
    unsigned got = 0;
    char pwhy[96] = "";
    const char *ok = "```json\n{\"theme\": {\"valid\": false, \"score\": 0.2, \"reason\": "
                     "\"Off topic.\"}, \"pdf\": {\"valid\": true, \"score\": 0.9, \"reason\": "
                     "\"A real plan {with braces}.\"}, \"image\": {\"valid\": true, \"score\": 1, "
                     "\"reason\": \"Fine.\"}}\n```";
    CU_ASSERT_EQUAL(ev_verdict_parse_parts(pv, &got, ok, strlen(ok), names, 3, pwhy, sizeof(pwhy)),
                    0);
    CU_ASSERT_EQUAL(got, 7u);
    CU_ASSERT_FALSE(pv[0].valid);
    CU_ASSERT_STRING_EQUAL(pv[1].reason, "A real plan {with braces}.");
    CU_ASSERT_DOUBLE_EQUAL(pv[2].score, 1.0, 1e-12);

    /* A missing part and a malformed one (score out of range, a repeated
     * field) leave the third usable. */
    const char *partial = "{\"theme\": {\"valid\": true, \"score\": 7, \"reason\": \"x\"}, "
                          "\"image\": {\"valid\": true, \"valid\": false, \"score\": 0.5, "
                          "\"reason\": \"x\"}, \"extra\": {\"valid\": true}, \"pdf\": "
                          "{\"valid\": true, \"score\": 0.5, \"reason\": \"Good.\"}}";
    CU_ASSERT_EQUAL(ev_verdict_parse_parts(pv, &got, partial, strlen(partial), names, 3, NULL, 0),
                    0);
    CU_ASSERT_EQUAL(got, 2u);
    /* Only the parts asked for count. */
    CU_ASSERT_EQUAL(
        ev_verdict_parse_parts(pv, &got, partial, strlen(partial), names, 1, pwhy, sizeof(pwhy)),
        EV_EPARSE);
    CU_ASSERT_EQUAL(got, 0u);
    CU_ASSERT_PTR_NOT_NULL(strstr(pwhy, "no part"));
    /* A repeated part is ambiguous; a single verdict is no combined answer. */
    const char *dup = "{\"pdf\": {\"valid\": true, \"score\": 0.5, \"reason\": \"a\"}, "
                      "\"pdf\": {\"valid\": false, \"score\": 0.5, \"reason\": \"b\"}}";
    CU_ASSERT_EQUAL(ev_verdict_parse_parts(pv, &got, dup, strlen(dup), names, 3, NULL, 0),
                    EV_EPARSE);
    const char *single = "{\"valid\": true, \"score\": 0.5, \"reason\": \"a\"}";
    CU_ASSERT_EQUAL(ev_verdict_parse_parts(pv, &got, single, strlen(single), names, 3, NULL, 0),
                    EV_EPARSE);
    CU_ASSERT_EQUAL(ev_verdict_parse_parts(pv, &got, "{\"theme\": {", 11, names, 3, NULL, 0),
                    EV_EPARSE);
}

static const ev_test_t verdict_tests[] = {
    {"combined answer parts", test_parts},
    {"duplicate keys are ambiguous", test_duplicate_keys_are_ambiguous},
    {"reason is cleaned", test_reason_is_cleaned},
    {"plain object", test_plain},
    {"fences and prose", test_fences_and_prose},
    {"truncated and empty", test_truncated},
    {"wrong types", test_wrong_types},
    {"long reason", test_long_reason_cut_on_char_boundary},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"verdict", NULL, NULL, verdict_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
