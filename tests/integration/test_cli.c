/*
 * test_cli.c - the real `event-validator` binary, as a user runs it.
 *
 * Every test spawns $EV_BUILD_DIR/event-validator with posix_spawn in a clean
 * environment (DATABASE_URL pointing at a fresh throwaway database, plus the
 * variables the test sets), captures stdout and stderr in files, and checks
 * the exit status, the output and the database afterwards. A refused command
 * must print exactly one line on stderr and write nothing.
 */
#include "ev/migrate.h"
#include "pgtest.h"
#include "simctl.h"

#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "runner.h"

#define BOUND_MS 20000
#define UNREACHABLE_URL "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"

extern char **environ;

static char tmpdir[64];
static char binary[512];

typedef struct run {
    int exit_code; /* -1 when killed by a signal */
    char *out;
    char *err;
} run_t;

static void run_free(run_t *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)
        buf[0] = '\0';
    fclose(f);
    return buf;
}

/* Builds the child's environment: DATABASE_URL (unless NULL), sanitizer
 * options passed through, then `extra` ("NAME=value" strings, NULL-ended). */
static char **make_env(const char *url, const char *const *extra)
{
    static const char *const pass[] = {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
                                       "TSAN_OPTIONS", "PATH",          NULL};
    char **env = calloc(64, sizeof(char *));
    int n = 0;

    if (url) {
        size_t len = strlen(url) + 16;

        env[n] = malloc(len);
        snprintf(env[n++], len, "DATABASE_URL=%s", url);
    }
    for (int i = 0; pass[i]; i++) {
        const char *v = getenv(pass[i]);

        if (v) {
            size_t len = strlen(pass[i]) + strlen(v) + 2;

            env[n] = malloc(len);
            snprintf(env[n++], len, "%s=%s", pass[i], v);
        }
    }
    for (int i = 0; extra && extra[i] && n < 62; i++)
        env[n++] = strdup(extra[i]);
    return env;
}

static void free_env(char **env)
{
    for (int i = 0; env[i]; i++)
        free(env[i]);
    free(env);
}

/* Starts the binary with args (NULL-ended, without argv[0]); output goes to
 * files in tmpdir named after `tag`. Returns the pid or -1. */
static pid_t spawn_cli(const char *url, const char *const *extra, const char *const *args,
                       const char *tag)
{
    posix_spawn_file_actions_t fa;
    char out_path[128], err_path[128];
    char *argv[32];
    char **env = make_env(url, extra);
    pid_t pid = -1;
    int n = 0;

    argv[n++] = binary;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    snprintf(out_path, sizeof(out_path), "%s/%s.out", tmpdir, tag);
    snprintf(err_path, sizeof(err_path), "%s/%s.err", tmpdir, tag);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (posix_spawn(&pid, binary, &fa, NULL, argv, env) != 0)
        pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    free_env(env);
    return pid;
}

/* Waits (bounded) for pid; returns its exit code, -1 for a signal, -2 on timeout. */
static int wait_child(pid_t pid, int bound_ms)
{
    int64_t deadline = mono_ms() + bound_ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (r < 0 && errno != EINTR)
            return -3;
        if (mono_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -2;
        }
        sleep_ms(10);
    }
}

static void collect(run_t *r, const char *tag, int code)
{
    char path[128];

    r->exit_code = code;
    snprintf(path, sizeof(path), "%s/%s.out", tmpdir, tag);
    r->out = slurp(path);
    snprintf(path, sizeof(path), "%s/%s.err", tmpdir, tag);
    r->err = slurp(path);
}

static void run_cli(run_t *r, const char *url, const char *const *extra, const char *const *args)
{
    pid_t pid = spawn_cli(url, extra, args, "run");

    CU_ASSERT_FATAL(pid > 0);
    collect(r, "run", wait_child(pid, BOUND_MS * 3));
}

/* Exactly one non-empty line, prefixed with the program name. */
static bool one_line(const char *s)
{
    const char *nl = strchr(s, '\n');

    return strncmp(s, "event-validator: ", 17) == 0 && nl != NULL && nl[1] == '\0';
}

static int64_t sql_i64(const char *url, const char *sql)
{
    int64_t v = -1;

    CU_ASSERT_EQUAL(ev_pgtest_query_i64(url, sql, &v), 0);
    return v;
}

static void write_file(const char *name, size_t size, char *path, size_t pathlen)
{
    FILE *f;

    snprintf(path, pathlen, "%s/%s", tmpdir, name);
    f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("%PDF-1.4\n", f);
    for (size_t i = 9; i < size; i++)
        fputc('a' + (int)(i % 26), f);
    fclose(f);
}

/* A fresh migrated database with one event (id 1). */
static char *make_db(void)
{
    char *url = NULL;

    if (ev_pgtest_create_db(&url) != 0) {
        CU_FAIL("cannot create a test database (is DATABASE_URL set?)");
        return NULL;
    }
    CU_ASSERT_EQUAL(ev_pgtest_exec(url, "INSERT INTO events (name, theme) "
                                        "VALUES ('cli test', 'open source')"),
                    0);
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT id FROM events"), 1);
    return url;
}

/* ---- tests -------------------------------------------------------------- */

static void test_version_and_help(void)
{
    run_t r;

    run_cli(&r, NULL, NULL, (const char *const[]){"--version", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    CU_ASSERT_EQUAL(strncmp(r.out, "event-validator " EV_VERSION, 16 + strlen(EV_VERSION)), 0);
    run_free(&r);

    run_cli(&r, NULL, NULL, (const char *const[]){"--help", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "Usage: event-validator"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "submit --event ID"));
    CU_ASSERT_STRING_EQUAL(r.err, "");
    run_free(&r);
}

static void test_usage_errors(void)
{
    static const struct {
        const char *args[8];
        const char *says;
    } cases[] = {
        {{NULL}, "missing command"},
        {{"frobnicate", NULL}, "unknown command 'frobnicate'"},
        {{"--bogus", NULL}, "unknown option '--bogus'"},
        {{"submit", "--event", "1", "--title", "t", "--bogus", NULL}, "unknown option '--bogus'"},
        {{"submit", "--title", "t", NULL}, "--event is required"},
        {{"submit", "--event", "1", NULL}, "--title is required"},
        {{"submit", "--event", "abc", "--title", "t", NULL}, "--event needs a positive integer"},
        {{"submit", "--event", "1", "--title", "t", "--priority", "high", NULL}, "--priority"},
        {{"submit", "--event", "1", "--title", NULL}, "option '--title' needs a value"},
        {{"event", "add", "--theme", "x", NULL}, "--name is required"},
        {{"event", "add", "--name", "x", NULL}, "--theme is required"},
        {{"event", "remove", NULL}, "unknown event sub-command 'remove'"},
        {{"show", NULL}, "submission id is required"},
        {{"show", "abc", NULL}, "'abc' is not a submission id"},
        {{"show", "1", "2", NULL}, "unexpected argument '2'"},
        {{"migrate", "now", NULL}, "unexpected argument 'now'"},
        {{"serve", "--fast", NULL}, "unknown option '--fast'"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run_t r;

        run_cli(&r, UNREACHABLE_URL, NULL, cases[i].args);
        CU_ASSERT_EQUAL(r.exit_code, 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(r.err, cases[i].says));
        CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "Usage: event-validator"));
        CU_ASSERT_STRING_EQUAL(r.out, "");
        if (r.exit_code != 2 || !strstr(r.err, cases[i].says))
            fprintf(stderr, "case %zu: exit %d, stderr: %s\n", i, r.exit_code, r.err);
        run_free(&r);
    }
}

static void test_migrate_twice(void)
{
    char *url = NULL;
    run_t r;

    CU_ASSERT_EQUAL_FATAL(ev_pgtest_create_empty_db(&url), 0);
    run_cli(&r, url, NULL, (const char *const[]){"migrate", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "applied"));
    run_free(&r);
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT count(*) FROM schema_migrations"),
                    (int64_t)ev_migrations_count);

    run_cli(&r, url, NULL, (const char *const[]){"migrate", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "nothing to apply"));
    run_free(&r);
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT count(*) FROM schema_migrations"),
                    (int64_t)ev_migrations_count);
    ev_pgtest_drop_db(url);
}

/* `status` on a migrated database: the cluster, queue and providers, as
 * text and as JSON; a registered replica and a shared pause show up. */
static void test_status(void)
{
    char *url = NULL;
    run_t r;

    CU_ASSERT_EQUAL_FATAL(ev_pgtest_create_db(&url), 0);
    CU_ASSERT_EQUAL(ev_pgtest_exec(url, "INSERT INTO ev_cluster_replicas (id, host, pid, version)"
                                        " VALUES ('h:1:ab', 'h', 1, '9.9.9');"
                                        "SELECT ev_rate_pause('groq', 60);"
                                        "UPDATE ev_provider_state SET pause_until = now()"
                                        " + interval '60 s', pause_reason = 'operator'"
                                        " WHERE provider = 'groq'"),
                    0);
    /* A claim by a replica that is not registered: an older version. */
    CU_ASSERT_EQUAL(ev_pgtest_exec(url, "INSERT INTO events (name, theme) VALUES ('st', 't');"
                                        "INSERT INTO submissions (event_id, title, status,"
                                        " lease_owner, heartbeat_at) SELECT id, 'x', 'processing',"
                                        " 'old:7:cafe', now() FROM events WHERE name = 'st'"),
                    0);
    run_cli(&r, url, NULL, (const char *const[]){"status", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "replicas: 1 alive"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "h:1:ab"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "gemini: breaker closed"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "(operator)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "not coordinating"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "old:7:cafe"));
    run_free(&r);
    run_cli(&r, url, NULL, (const char *const[]){"status", "--json", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    json_object *st = json_tokener_parse(r.out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    json_object *v = NULL;
    CU_ASSERT_TRUE(json_object_object_get_ex(st, "replicas_alive", &v));
    CU_ASSERT_EQUAL(json_object_get_int(v), 1);
    CU_ASSERT_TRUE(json_object_object_get_ex(st, "providers", &v));
    json_object_put(st);
    run_free(&r);
    ev_pgtest_drop_db(url);
}

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;

    CU_ASSERT_TRUE(json_object_object_get_ex(o, key, &v));
    return v;
}

static void test_event_submit_show(void)
{
    char *url = make_db();
    char pdf[256], img1[256], img2[256], sql[512];
    run_t r;
    int64_t event_id, sub_id;
    json_object *doc, *checks, *theme;

    if (!url)
        return;
    write_file("doc.pdf", 3000, pdf, sizeof(pdf));
    write_file("one.png", 500, img1, sizeof(img1));
    write_file("two.jpg", 700, img2, sizeof(img2));

    run_cli(&r, url, NULL,
            (const char *const[]){"event", "add", "--name", "Hackathon", "--theme", "climate",
                                  "--rules", "max 2 pages", "--require-pdf", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    event_id = strtoll(r.out, NULL, 10);
    CU_ASSERT_TRUE(event_id > 1);
    run_free(&r);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM events WHERE id = %lld AND name = 'Hackathon' AND theme = "
             "'climate' AND rules = 'max 2 pages' AND require_pdf AND NOT require_image",
             (long long)event_id);
    CU_ASSERT_EQUAL(sql_i64(url, sql), 1);

    /* The same name again is refused with one line. */
    run_cli(&r, url, NULL,
            (const char *const[]){"event", "add", "--name", "Hackathon", "--theme", "x", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 1);
    CU_ASSERT_TRUE(one_line(r.err));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "already exists"));
    run_free(&r);

    run_cli(&r, url, NULL,
            (const char *const[]){"submit", "--event", "1", "--title", "Solar kiosk",
                                  "--description", "A kiosk.", "--pdf", pdf, "--image", img1,
                                  "--image", img2, "--priority", "7", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    sub_id = strtoll(r.out, NULL, 10);
    CU_ASSERT_TRUE(sub_id > 0);
    CU_ASSERT_STRING_EQUAL(r.err, "");
    run_free(&r);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM submission_files WHERE submission_id = %lld AND ("
             "(kind = 'pdf' AND filename = 'doc.pdf' AND length(content) = 3000) OR "
             "(kind = 'image' AND filename = 'one.png' AND length(content) = 500) OR "
             "(kind = 'image' AND filename = 'two.jpg' AND length(content) = 700))",
             (long long)sub_id);
    CU_ASSERT_EQUAL(sql_i64(url, sql), 3);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM submission_files WHERE submission_id = %lld AND kind = 'pdf' "
             "AND substr(content, 1, 5) = '\\x255044462d'::bytea",
             (long long)sub_id);
    CU_ASSERT_EQUAL(sql_i64(url, sql), 1);

    /* show, first without results, then with one check result. */
    snprintf(sql, sizeof(sql), "%lld", (long long)sub_id);
    run_cli(&r, url, NULL, (const char *const[]){"show", sql, NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    doc = json_tokener_parse(r.out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
    CU_ASSERT_EQUAL(json_object_get_int64(get(doc, "id")), sub_id);
    CU_ASSERT_EQUAL(json_object_get_int64(get(doc, "event_id")), 1);
    CU_ASSERT_STRING_EQUAL(json_object_get_string(get(doc, "title")), "Solar kiosk");
    CU_ASSERT_STRING_EQUAL(json_object_get_string(get(doc, "description")), "A kiosk.");
    CU_ASSERT_EQUAL(json_object_get_int(get(doc, "priority")), 7);
    CU_ASSERT_STRING_EQUAL(json_object_get_string(get(doc, "status")), "pending");
    CU_ASSERT_EQUAL(json_object_get_int(get(doc, "attempts")), 0);
    CU_ASSERT_PTR_NULL(get(doc, "last_error"));
    CU_ASSERT_PTR_NOT_NULL(get(doc, "created_at"));
    CU_ASSERT_PTR_NOT_NULL(get(doc, "updated_at"));
    checks = get(doc, "checks");
    CU_ASSERT_TRUE(json_object_is_type(checks, json_type_object));
    CU_ASSERT_EQUAL(json_object_object_length(checks), 0);
    json_object_put(doc);
    run_free(&r);

    {
        char ins[512];

        snprintf(ins, sizeof(ins),
                 "INSERT INTO validation_results (submission_id, check_name, verdict, score, "
                 "reason, provider, model, http_attempts, latency_ms, tokens_in, tokens_out) "
                 "VALUES (%lld, 'theme', 'pass', 0.9, 'fits \"climate\"', 'gemini', "
                 "'gemini-2.5-flash', 2, 1234, 500, 40)",
                 (long long)sub_id);
        CU_ASSERT_EQUAL(ev_pgtest_exec(url, ins), 0);
    }
    run_cli(&r, url, NULL, (const char *const[]){"show", sql, NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    doc = json_tokener_parse(r.out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
    checks = get(doc, "checks");
    CU_ASSERT_EQUAL(json_object_object_length(checks), 1);
    theme = get(checks, "theme");
    CU_ASSERT_PTR_NOT_NULL_FATAL(theme);
    CU_ASSERT_STRING_EQUAL(json_object_get_string(get(theme, "verdict")), "pass");
    CU_ASSERT_DOUBLE_EQUAL(json_object_get_double(get(theme, "score")), 0.9, 1e-9);
    CU_ASSERT_STRING_EQUAL(json_object_get_string(get(theme, "reason")), "fits \"climate\"");
    CU_ASSERT_STRING_EQUAL(json_object_get_string(get(theme, "provider")), "gemini");
    CU_ASSERT_STRING_EQUAL(json_object_get_string(get(theme, "model")), "gemini-2.5-flash");
    CU_ASSERT_EQUAL(json_object_get_int(get(theme, "http_attempts")), 2);
    CU_ASSERT_EQUAL(json_object_get_int(get(theme, "latency_ms")), 1234);
    CU_ASSERT_EQUAL(json_object_get_int(get(theme, "tokens_in")), 500);
    CU_ASSERT_EQUAL(json_object_get_int(get(theme, "tokens_out")), 40);
    CU_ASSERT_TRUE(json_object_is_type(get(theme, "cached"), json_type_boolean));
    CU_ASSERT_FALSE(json_object_get_boolean(get(theme, "cached")));
    json_object_put(doc);
    run_free(&r);

    run_cli(&r, url, NULL, (const char *const[]){"show", "999999", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 1);
    CU_ASSERT_TRUE(one_line(r.err));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "submission 999999 does not exist"));
    run_free(&r);
    ev_pgtest_drop_db(url);
}

/* Each refused submit: exit 1, one line naming the problem, nothing written. */
static void test_submit_refusals(void)
{
    char *url = make_db();
    char pdf[256], big[256], img[256];
    char missing[300], fifo[300];
    run_t r;
    static const char *const nothing_written =
        "SELECT (SELECT count(*) FROM submissions) + (SELECT count(*) FROM submission_files)";
    struct {
        const char *env[3];
        const char *args[12];
        const char *says[2];
    } cases[] = {
        {{NULL},
         {"submit", "--event", "1", "--title", "t", "--pdf", missing, NULL},
         {"cannot read", "No such file or directory"}},
        {{NULL},
         {"submit", "--event", "1", "--title", "t", "--pdf", pdf, "--image", missing, NULL},
         {"cannot read", missing}},
        {{NULL},
         {"submit", "--event", "1", "--title", "t", "--pdf", tmpdir, NULL},
         {"cannot read", "not a regular file"}},
        {{"PDF_MAX_BYTES=1024", NULL},
         {"submit", "--event", "1", "--title", "t", "--pdf", big, NULL},
         {"too large", "PDF_MAX_BYTES"}},
        {{"IMAGE_MAX_BYTES=1024", NULL},
         {"submit", "--event", "1", "--title", "t", "--image", img, "--image", big, NULL},
         {"too large", "IMAGE_MAX_BYTES"}},
        {{"MAX_IMAGES=1", NULL},
         {"submit", "--event", "1", "--title", "t", "--image", img, "--image", img, NULL},
         {"too many images", "MAX_IMAGES"}},
        {{NULL},
         {"submit", "--event", "424242", "--title", "t", "--pdf", pdf, NULL},
         {"event 424242 does not exist", "event 424242"}},
        /* A FIFO nobody writes to: refused at once, never waited on. */
        {{NULL},
         {"submit", "--event", "1", "--title", "t", "--pdf", fifo, NULL},
         {"cannot read", "not a regular file"}},
        {{NULL},
         {"submit", "--event", "1", "--title", " \t\xc2\xa0\xe2\x80\x83", "--pdf", pdf, NULL},
         {"title", "blank space"}},
    };

    if (!url)
        return;
    write_file("ok.pdf", 1000, pdf, sizeof(pdf));
    write_file("ok.png", 1000, img, sizeof(img));
    write_file("big.bin", 4096, big, sizeof(big));
    snprintf(missing, sizeof(missing), "%s/does-not-exist.pdf", tmpdir);
    snprintf(fifo, sizeof(fifo), "%s/slides-fifo.pdf", tmpdir);
    unlink(fifo);
    CU_ASSERT_EQUAL_FATAL(mkfifo(fifo, 0600), 0);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run_cli(&r, url, cases[i].env, cases[i].args);
        CU_ASSERT_EQUAL(r.exit_code, 1);
        CU_ASSERT_TRUE(one_line(r.err));
        CU_ASSERT_PTR_NOT_NULL(strstr(r.err, cases[i].says[0]));
        CU_ASSERT_PTR_NOT_NULL(strstr(r.err, cases[i].says[1]));
        CU_ASSERT_STRING_EQUAL(r.out, "");
        if (r.exit_code != 1 || !strstr(r.err, cases[i].says[0]))
            fprintf(stderr, "case %zu: exit %d, stderr: %s\n", i, r.exit_code, r.err);
        run_free(&r);
        CU_ASSERT_EQUAL(sql_i64(url, nothing_written), 0);
    }
    unlink(fifo);
    ev_pgtest_drop_db(url);
}

static void test_unreachable_database_and_bad_config(void)
{
    const char *const cmds[][3] = {{"migrate", NULL}, {"show", "1", NULL}};
    run_t r;

    for (size_t i = 0; i < 2; i++) {
        run_cli(&r, UNREACHABLE_URL, NULL, cmds[i]);
        CU_ASSERT_EQUAL(r.exit_code, 1);
        CU_ASSERT_TRUE(one_line(r.err));
        CU_ASSERT_EQUAL(strncmp(r.err, "event-validator: database unreachable: ", 39), 0);
        run_free(&r);
    }
    run_cli(&r, UNREACHABLE_URL, NULL,
            (const char *const[]){"event", "add", "--name", "n", "--theme", "t", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 1);
    CU_ASSERT_TRUE(one_line(r.err));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "database unreachable"));
    run_free(&r);

    /* A password in the URL never shows up in the message. */
    run_cli(&r, "postgresql://nobody:hunter2secret@127.0.0.1:1/none?connect_timeout=2", NULL,
            (const char *const[]){"show", "1", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 1);
    CU_ASSERT_PTR_NULL(strstr(r.err, "hunter2secret"));
    run_free(&r);

    run_cli(&r, UNREACHABLE_URL, (const char *const[]){"GEMINI_RPM_LIMIT=abc", NULL},
            (const char *const[]){"show", "1", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 1);
    CU_ASSERT_TRUE(one_line(r.err));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "GEMINI_RPM_LIMIT"));
    run_free(&r);
}

/* Environment for serve tests: a dummy key pointing at a port nobody serves,
 * and a stats port of our own so parallel runs do not collide. */
static void serve_env(const char *env[8], char *port_var, size_t len)
{
    snprintf(port_var, len, "STATS_PORT=%d", 20000 + (int)(getpid() % 20000));
    env[0] = "GEMINI_API_KEY=dummy-key-for-tests";
    env[1] = "GEMINI_BASE_URL=http://127.0.0.1:9/v1beta";
    env[2] = "GROQ_BASE_URL=http://127.0.0.1:9/openai/v1";
    env[3] = "STATS_ADDR=127.0.0.1";
    env[4] = port_var;
    env[5] = "WORKER_STAGGER_MS=0";
    env[6] = NULL;
}

static void test_serve(void)
{
    char *url = make_db();
    char *empty = NULL;
    const char *env[8];
    char port_var[32];
    run_t r;
    pid_t pid;
    int64_t deadline;
    bool up = false;

    if (!url)
        return;
    serve_env(env, port_var, sizeof(port_var));

    /* No provider key: refused with one line. */
    run_cli(&r, url, NULL, (const char *const[]){"serve", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 1);
    CU_ASSERT_TRUE(one_line(r.err));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "GEMINI_API_KEY"));
    run_free(&r);

    /* Unmigrated database: refused, pointing at `migrate`. */
    CU_ASSERT_EQUAL_FATAL(ev_pgtest_create_empty_db(&empty), 0);
    run_cli(&r, empty, env, (const char *const[]){"serve", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 1);
    CU_ASSERT_TRUE(one_line(r.err));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "migrate"));
    run_free(&r);
    ev_pgtest_drop_db(empty);

    /* Unreachable database: refused. */
    run_cli(&r, UNREACHABLE_URL, env, (const char *const[]){"serve", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 1);
    CU_ASSERT_TRUE(one_line(r.err));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "database unreachable"));
    run_free(&r);

    /* --drain on an empty queue: exits 0 by itself. */
    run_cli(&r, url, env, (const char *const[]){"serve", "--drain", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    CU_ASSERT_PTR_NULL(strstr(r.err, "dummy-key-for-tests"));
    run_free(&r);

    /* SIGTERM once the pool is connected (heartbeat + workers): graceful
     * exit 0. */
    pid = spawn_cli(url, env, (const char *const[]){"serve", NULL}, "serve");
    CU_ASSERT_FATAL(pid > 0);
    deadline = mono_ms() + BOUND_MS;
    while (!up && mono_ms() < deadline) {
        int64_t n = 0;

        if (ev_pgtest_query_i64(url,
                                "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                "current_database() AND application_name = 'event-validator' "
                                "AND pid <> pg_backend_pid()",
                                &n) == 0 &&
            n >= 2)
            up = true;
        else
            sleep_ms(50);
    }
    CU_ASSERT_TRUE(up);
    /* The container probe: the running server's /livez answers. */
    run_cli(&r, url, env, (const char *const[]){"healthcheck", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    run_free(&r);
    kill(pid, SIGTERM);
    collect(&r, "serve", wait_child(pid, BOUND_MS * 2));
    CU_ASSERT_EQUAL(r.exit_code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "SIGTERM"));
    CU_ASSERT_PTR_NULL(strstr(r.err, "dummy-key-for-tests"));
    run_free(&r);
    /* Nothing listens any more: the probe fails with one line naming the URL. */
    run_cli(&r, url, env, (const char *const[]){"healthcheck", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 1);
    CU_ASSERT_TRUE(one_line(r.err));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "/livez"));
    run_free(&r);
    ev_pgtest_drop_db(url);
}

/* `providers check` asks the metadata endpoints only and prints the table;
 * `serve` runs the same preflight, sets aside the models the providers call
 * gone and, with none left, stops at once as with bad keys. */
static void test_providers_check_and_preflight(void)
{
    simctl_t *sim = NULL;
    char *url = make_db();
    char gurl[160], qurl[160], port_var[32];
    run_t r;

    if (!url)
        return;
    CU_ASSERT_EQUAL_FATAL(simctl_start(&sim, NULL), 0);
    snprintf(gurl, sizeof(gurl), "GEMINI_BASE_URL=%s", simctl_gemini_url(sim));
    snprintf(qurl, sizeof(qurl), "GROQ_BASE_URL=%s", simctl_groq_url(sim));
    snprintf(port_var, sizeof(port_var), "STATS_PORT=%d", 20000 + (int)(getpid() % 20000));
    const char *env[] = {"GEMINI_API_KEY=" SIMCTL_GEMINI_KEY,
                         "GROQ_API_KEY=" SIMCTL_GROQ_KEY,
                         gurl,
                         qurl,
                         "GEMINI_MODELS=gemini-2.5-flash,gemini-3.5-flash-lite",
                         "STATS_ADDR=127.0.0.1",
                         port_var,
                         NULL};
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"retired_models\": \"gemini-2.5-flash\"}"), 0);
    run_cli(&r, url, env, (const char *const[]){"providers", "check", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "gemini-2.5-flash "));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "unknown"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "theme  answered by gemini gemini-3.5-flash-lite"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "image  answered by gemini gemini-3.5-flash-lite"));
    run_free(&r);
    /* Metadata only: no generation request, no quota spent. */
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "requests"), 0);
    CU_ASSERT_EQUAL(simctl_counter(sim, "groq", "requests"), 0);
    CU_ASSERT(simctl_counter(sim, "gemini", "model_checks") == 2);

    /* Every configured model gone. */
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini",
                               "{\"retired_models\": \"gemini-2.5-flash,gemini-3.5-flash-lite\"}"),
                    0);
    CU_ASSERT_EQUAL(simctl_set(sim, "groq",
                               "{\"retired_models\": \"openai/gpt-oss-120b,openai/gpt-oss-20b,"
                               "qwen/qwen3.8-27b,qwen/qwen3.6-27b\"}"),
                    0);
    run_cli(&r, url, env, (const char *const[]){"providers", "check", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "theme  NO configured model"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "no usable model"));
    run_free(&r);
    run_cli(&r, url, env, (const char *const[]){"serve", NULL});
    CU_ASSERT_EQUAL(r.exit_code, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "every LLM provider was disabled"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "gemini model gemini-3.5-flash-lite is unknown"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "groq model qwen/qwen3.6-27b is unknown"));
    CU_ASSERT_PTR_NULL(strstr(r.err, SIMCTL_GEMINI_KEY));
    run_free(&r);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "requests"), 0);
    CU_ASSERT_EQUAL(simctl_counter(sim, "groq", "requests"), 0);
    simctl_free(sim);
    ev_pgtest_drop_db(url);
}

static int suite_init(void)
{
    const char *dir = getenv("EV_BUILD_DIR");
    struct stat st;

    if (dir == NULL) {
        fprintf(stderr, "test_cli: EV_BUILD_DIR is not set (run through ctest)\n");
        return -1;
    }
    snprintf(binary, sizeof(binary), "%s/event-validator", dir);
    if (stat(binary, &st) != 0) {
        fprintf(stderr, "test_cli: %s: %s\n", binary, strerror(errno));
        return -1;
    }
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ev-test-cli.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    return 0;
}

static int suite_clean(void)
{
    static const char *const names[] = {"run.out", "run.err", "serve.out", "serve.err",
                                        "doc.pdf", "one.png", "two.jpg",   "ok.pdf",
                                        "ok.png",  "big.bin", NULL};
    char path[128];

    for (int i = 0; names[i]; i++) {
        snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
    return 0;
}

static const ev_test_t cli_tests[] = {
    {"--version and --help", test_version_and_help},
    {"usage errors exit 2", test_usage_errors},
    {"migrate twice", test_migrate_twice},
    {"status", test_status},
    {"event add, submit, show", test_event_submit_show},
    {"submit refusals write nothing", test_submit_refusals},
    {"unreachable database, bad config", test_unreachable_database_and_bad_config},
    {"serve", test_serve},
    {"providers check and serve's preflight", test_providers_check_and_preflight},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"cli", suite_init, suite_clean, cli_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
