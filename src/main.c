/*
 * main.c - turns argv into one command of src/cli.c (SPEC §2).
 *
 * Parses the command line (usage mistakes: usage on stderr, exit 2), loads
 * and validates the configuration (a bad value: one line, exit 1), performs
 * the process-wide set-up that must precede every thread (log level,
 * curl_global_init, signal mask) and calls the command. A command that fails
 * prints one line "event-validator: <problem>" and exits 1.
 *
 * Threads: only the main thread runs here; `serve` starts the others.
 */
#include "ev/cli.h"
#include "ev/config.h"
#include "ev/console.h"
#include "ev/error.h"
#include "ev/log.h"
#include "ev/sandbox.h"
#include "ev/threads.h"
#include "ev/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "event-validator"
#define EXIT_USAGE 2

static const char usage_text[] =
    "Usage: " PROG " COMMAND [OPTIONS]\n"
    "\n"
    "Commands:\n"
    "  migrate                 apply the database migrations (idempotent)\n"
    "  serve [--drain]         run the worker pool and the stats server until\n"
    "                          SIGTERM/SIGINT; with --drain, exit once the queue\n"
    "                          is empty and all in-flight work is done\n"
    "  event add --name N --theme T [--rules R] [--require-pdf] [--require-image]\n"
    "            [--budget USD]\n"
    "                          create an event and print its id\n"
    "  submit --event ID --title T [--description D] [--pdf FILE]\n"
    "         [--image FILE]... [--priority N]\n"
    "                          store a submission and its files, print its id\n"
    "  show ID                 print a submission and its check results as JSON\n"
    "  status [--json]         the cluster: replicas, queue counts, provider\n"
    "                          states and the limits in force\n"
    "  token create --name N (--event ID | --admin)\n"
    "                          create an API token; prints it once (first line)\n"
    "  token list              list API tokens (never their secret part)\n"
    "  token revoke ID         revoke an API token\n"
    "  webhooks list [--failed]  webhook deliveries, newest first\n"
    "  webhooks retry ID       send a failed webhook delivery again\n"
    "  healthcheck [--ready]   exit 0 when the local stats server answers /livez\n"
    "                          (with --ready: /readyz), else 1; for container probes\n"
    "  requeue (--status S | --id N...) [--event E] [--dry-run]\n"
    "                          put submissions back to pending, attempts reset\n"
    "                          (never one being processed); prints what changed\n"
    "  cancel ID...            cancel pending, needs_review or failed submissions\n"
    "  event budget ID USD|none\n"
    "                          set or remove what an event's submissions may cost\n"
    "  provider pause|resume NAME [--for DURATION]\n"
    "                          stop or restart calls to a provider on every replica\n"
    "                          (DURATION: 90, 90s, 15m, 2h, 1d; default: until resumed)\n"
    "  breaker reset NAME      close a provider's circuit breaker on every replica\n"
    "  emergency on|off        stop every LLM call on every replica (work waits as\n"
    "                          pending, nothing fails) / resume\n"
    "  spend limit USD|default set the daily spend limit per provider for the\n"
    "                          whole cluster (0: none; default: DAILY_SPEND_LIMIT_USD)\n"
    "  providers check         ask each provider about every configured model\n"
    "                          (no generation quota spent) and print a table;\n"
    "                          exit 0 only when every check has a usable model\n"
    "  --help                  show this help\n"
    "  --version               show the version\n"
    "\n"
    "Configuration comes from the environment (DATABASE_URL, GEMINI_API_KEY,\n"
    "GROQ_API_KEY, ...; see the README). Exit status: 0 success, 1 failure,\n"
    "2 wrong usage.\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Wrong usage: the problem on one line, then the usage, exit 2. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", usage_text);
    return EXIT_USAGE;
}

/* A runtime failure: one line, exit 1. */
static int fail(const char *msg)
{
    fprintf(stderr, PROG ": %s\n", msg[0] ? msg : "unknown error");
    return EXIT_FAILURE;
}

/* Strict decimal parse of a whole argument into [min, max]. */
static bool parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    long long v;

    if (s == NULL || *s == '\0')
        return false;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = (int64_t)v;
    return true;
}

/* The getopt_long error for the option at argv[optind - 1]. */
static int option_error(int c, char **argv)
{
    const char *arg = argv[optind - 1];

    if (c == ':')
        return usage_error("option '%s' needs a value", arg);
    return usage_error("unknown option '%s'", arg);
}

/* What ends a command's option loop: --help/-h prints the usage (exit 0),
 * anything else is the getopt_long error. */
static int help_or_option_error(int c, char **argv)
{
    int rc;

    if (c == 'h') {
        fputs(usage_text, stdout);
        rc = 0;
    } else {
        rc = option_error(c, argv);
    }
    return rc;
}

static int reject_extra(int argc, char **argv)
{
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    return 0;
}

static int load_config(ev_config_t **cfg)
{
    char err[512] = "";

    if (ev_config_load(cfg, NULL, NULL, err, sizeof(err)) != 0)
        return fail(err);
    ev_log_set_level((*cfg)->log_level);
    return 0;
}

/* libcurl's process-wide set-up, which must happen before any thread exists.
 * On failure frees cfg and returns the exit status. */
static int curl_init_or_free(ev_config_t *cfg)
{
    int rc = 0;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ev_config_free(cfg);
        rc = fail("cannot initialise libcurl");
    }
    return rc;
}

/* One boolean long option of a command that takes nothing else. */
typedef struct {
    const char *name;
    bool *set;
} bool_flag_t;

enum { MAX_BOOL_FLAGS = 4, BOOL_FLAG_VAL = 256 };

/* For a command whose only arguments are boolean flags (a table ended by a
 * NULL name) and --help/-h: parses them, rejects anything else, then loads
 * the configuration. Returns 0 with *cfg loaded; 0 with *cfg NULL when the
 * usage was printed for --help; otherwise the exit status to return. */
static int flags_then_config(int argc, char **argv, const bool_flag_t *flags, ev_config_t **cfg)
{
    struct option opts[MAX_BOOL_FLAGS + 2] = {{0}};
    bool help = false;
    int c, n = 0, rc = 0;

    for (; n < MAX_BOOL_FLAGS && flags[n].name != NULL; n++)
        opts[n] = (struct option){flags[n].name, no_argument, NULL, BOOL_FLAG_VAL + n};
    opts[n] = (struct option){"help", no_argument, NULL, 'h'};
    *cfg = NULL;
    while (rc == 0 && !help && (c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c >= BOOL_FLAG_VAL && c < BOOL_FLAG_VAL + n) {
            *flags[c - BOOL_FLAG_VAL].set = true;
        } else {
            help = c == 'h';
            rc = help_or_option_error(c, argv);
        }
    }
    if (rc == 0 && !help)
        rc = reject_extra(argc, argv);
    if (rc == 0 && !help)
        rc = load_config(cfg);
    return rc;
}

static int cmd_migrate(int argc, char **argv)
{
    static const bool_flag_t flags[] = {{NULL, NULL}};
    ev_config_t *cfg = NULL;
    char err[1024] = "";
    int applied = 0, rc;

    if ((rc = flags_then_config(argc, argv, flags, &cfg)) != 0 || cfg == NULL)
        return rc;
    if (ev_cli_migrate(cfg, &applied, err, sizeof(err)) != 0) {
        rc = fail(err);
    } else {
        if (applied > 0)
            printf("applied %d migration(s)\n", applied);
        else
            printf("schema is up to date; nothing to apply\n");
        rc = 0;
    }
    ev_config_free(cfg);
    return rc;
}

static int cmd_serve(int argc, char **argv)
{
    ev_cli_serve_args_t args = {.drain = false, .grace_ms = -1};
    const bool_flag_t flags[] = {{"drain", &args.drain}, {NULL, NULL}};
    ev_config_t *cfg = NULL;
    char err[1024] = "";
    int rc;

    if ((rc = flags_then_config(argc, argv, flags, &cfg)) != 0 || cfg == NULL)
        return rc;
    if ((rc = curl_init_or_free(cfg)) != 0)
        return rc;
    if (ev_signals_block_all() != 0) {
        rc = fail("cannot block signals");
    } else if (ev_cli_serve(cfg, &args, err, sizeof(err)) != 0) {
        rc = fail(err);
    } else {
        rc = 0;
    }
    curl_global_cleanup();
    ev_config_free(cfg);
    return rc;
}

/* The number at the start of s (strtod: not empty, no overflow); *end is
 * what follows it. */
static bool parse_double(const char *s, double *v, char **end)
{
    if (s == NULL || *s == '\0')
        return false;
    errno = 0;
    *v = strtod(s, end);
    return errno == 0 && *end != s;
}

/* A decimal amount of US dollars, 0 to 1,000,000,000. */
static bool parse_usd(const char *s, double *out)
{
    char *end = NULL;
    double v;
    if (!parse_double(s, &v, &end) || *end != '\0' || !(v >= 0 && v <= 1e9))
        return false;
    *out = v;
    return true;
}

/* Prints a console command's report, or its failure; frees the report. */
static int console_done(int rc, char *report, const char *err)
{
    if (rc != 0)
        rc = fail(err);
    else
        fputs(report, stdout);
    free(report);
    return rc;
}

/* `event budget ID USD|none` (argv[0] is "budget"). */
static int cmd_event_budget(int argc, char **argv)
{
    ev_config_t *cfg = NULL;
    char err[1024] = "", *report = NULL;
    int64_t id;
    double usd = -1;
    int rc;

    if (argc != 3)
        return usage_error("event budget: needs an event id and an amount (USD, or 'none')");
    if (!parse_int64(argv[1], 1, INT64_MAX, &id))
        return usage_error("event budget: '%s' is not an event id", argv[1]);
    if (strcmp(argv[2], "none") != 0 && !parse_usd(argv[2], &usd))
        return usage_error("event budget: '%s' is not a USD amount or 'none'", argv[2]);
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    rc = ev_console_event_budget(cfg, id, usd, ev_console_cli_actor(), &report, err, sizeof(err));
    rc = console_done(rc, report, err);
    ev_config_free(cfg);
    return rc;
}

/* "90", "90s", "15m", "2h", "1d" as seconds (> 0, at most a year). */
static bool parse_duration(const char *s, double *out)
{
    char *end = NULL;
    double v, unit = 1;
    if (!parse_double(s, &v, &end))
        return false;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        unit = 60, end++;
    else if (*end == 'h')
        unit = 3600, end++;
    else if (*end == 'd')
        unit = 86400, end++;
    if (*end != '\0' || !(v > 0) || v * unit > 366 * 86400.0)
        return false;
    *out = v * unit;
    return true;
}

typedef struct control_args {
    const char *name;
    bool on;
    double seconds;
} control_args_t;

static int do_pause(ev_db_t *db, void *arg, char **report, char *err, size_t errlen)
{
    control_args_t *a = arg;
    return ev_console_provider_pause(db, a->name, a->on, a->seconds, ev_console_cli_actor(), report,
                                     err, errlen);
}

static int do_breaker_reset(ev_db_t *db, void *arg, char **report, char *err, size_t errlen)
{
    control_args_t *a = arg;
    return ev_console_breaker_reset(db, a->name, ev_console_cli_actor(), report, err, errlen);
}

static int do_emergency(ev_db_t *db, void *arg, char **report, char *err, size_t errlen)
{
    control_args_t *a = arg;
    return ev_console_emergency(db, a->on, ev_console_cli_actor(), report, err, errlen);
}

/* Loads the configuration and runs one cluster control. */
static int run_control(ev_console_db_fn fn, control_args_t *a)
{
    ev_config_t *cfg = NULL;
    char err[1024] = "", *report = NULL;
    int rc = load_config(&cfg);
    if (rc != 0)
        return rc;
    rc = ev_console_with_db(cfg, fn, a, &report, err, sizeof(err));
    rc = console_done(rc, report, err);
    ev_config_free(cfg);
    return rc;
}

/* `provider pause|resume NAME [--for DURATION]`. */
static int cmd_provider(int argc, char **argv)
{
    control_args_t a = {0};
    if (argc < 3 || (strcmp(argv[1], "pause") != 0 && strcmp(argv[1], "resume") != 0))
        return usage_error("provider: usage is 'provider pause|resume NAME [--for DURATION]'");
    a.on = strcmp(argv[1], "pause") == 0;
    a.name = argv[2];
    if (argc == 5 && a.on && strcmp(argv[3], "--for") == 0) {
        if (!parse_duration(argv[4], &a.seconds))
            return usage_error("provider pause: --for needs a duration such as 90s, 15m, 2h, "
                               "1d, got '%s'",
                               argv[4]);
    } else if (argc != 3) {
        return usage_error("provider: usage is 'provider pause|resume NAME [--for DURATION]'");
    }
    return run_control(do_pause, &a);
}

/* `breaker reset NAME`. */
static int cmd_breaker(int argc, char **argv)
{
    control_args_t a = {0};
    if (argc != 3 || strcmp(argv[1], "reset") != 0)
        return usage_error("breaker: usage is 'breaker reset NAME'");
    a.name = argv[2];
    return run_control(do_breaker_reset, &a);
}

/* `emergency on|off`. */
static int cmd_emergency(int argc, char **argv)
{
    control_args_t a = {0};
    if (argc != 2 || (strcmp(argv[1], "on") != 0 && strcmp(argv[1], "off") != 0))
        return usage_error("emergency: usage is 'emergency on|off'");
    a.on = strcmp(argv[1], "on") == 0;
    return run_control(do_emergency, &a);
}

/* `spend limit USD|default`. */
static int cmd_spend(int argc, char **argv)
{
    ev_config_t *cfg = NULL;
    char err[1024] = "", *report = NULL;
    double usd = -1;
    int rc;

    if (argc != 3 || strcmp(argv[1], "limit") != 0)
        return usage_error("spend: usage is 'spend limit USD|default'");
    if (strcmp(argv[2], "default") != 0 && !parse_usd(argv[2], &usd))
        return usage_error("spend limit: '%s' is not a USD amount or 'default'", argv[2]);
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    rc = ev_console_spend_limit(cfg, usd, ev_console_cli_actor(), &report, err, sizeof(err));
    rc = console_done(rc, report, err);
    ev_config_free(cfg);
    return rc;
}

static int cmd_event(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, NULL, 'n'},    {"theme", required_argument, NULL, 't'},
        {"rules", required_argument, NULL, 'r'},   {"require-pdf", no_argument, NULL, 'P'},
        {"require-image", no_argument, NULL, 'I'}, {"budget", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    ev_cli_event_args_t args = {0};
    ev_config_t *cfg = NULL;
    char err[1024] = "";
    int64_t id = 0;
    double budget = 0;
    int c, rc;

    /* argv[0] is "event"; the sub-command comes next. */
    if (argc < 2)
        return usage_error("'event' needs a sub-command: add, budget");
    if (strcmp(argv[1], "budget") == 0)
        return cmd_event_budget(argc - 1, argv + 1);
    if (strcmp(argv[1], "add") != 0)
        return usage_error("unknown event sub-command '%s'", argv[1]);
    argc--;
    argv++;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            args.name = optarg;
            break;
        case 't':
            args.theme = optarg;
            break;
        case 'r':
            args.rules = optarg;
            break;
        case 'P':
            args.require_pdf = true;
            break;
        case 'I':
            args.require_image = true;
            break;
        case 'b':
            if (!parse_usd(optarg, &budget))
                return usage_error("event add: --budget needs a decimal USD amount, got '%s'",
                                   optarg);
            args.budget_usd = optarg;
            break;
        default:
            return help_or_option_error(c, argv);
        }
    }
    if ((rc = reject_extra(argc, argv)) != 0)
        return rc;
    if (args.name == NULL || args.name[0] == '\0')
        return usage_error("event add: --name is required (non-empty)");
    if (args.theme == NULL || args.theme[0] == '\0')
        return usage_error("event add: --theme is required (non-empty)");
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    if (ev_cli_event_add(cfg, &args, &id, err, sizeof(err)) != 0) {
        rc = fail(err);
    } else {
        printf("%" PRId64 "\n", id);
        rc = 0;
    }
    ev_config_free(cfg);
    return rc;
}

static int cmd_submit(int argc, char **argv)
{
    static const struct option opts[] = {{"event", required_argument, NULL, 'e'},
                                         {"title", required_argument, NULL, 't'},
                                         {"description", required_argument, NULL, 'd'},
                                         {"pdf", required_argument, NULL, 'p'},
                                         {"image", required_argument, NULL, 'i'},
                                         {"priority", required_argument, NULL, 'P'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    ev_cli_submit_args_t args = {0};
    const char **images = ev_calloc((size_t)argc, sizeof(*images));
    const char *event = NULL;
    ev_config_t *cfg = NULL;
    char err[1024] = "";
    int64_t id = 0, v;
    int c, rc;

    args.images = images;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'e':
            event = optarg;
            break;
        case 't':
            args.title = optarg;
            break;
        case 'd':
            args.description = optarg;
            break;
        case 'p':
            if (args.pdf != NULL) {
                rc = usage_error("submit: --pdf given more than once");
                goto out;
            }
            args.pdf = optarg;
            break;
        case 'i':
            images[args.nimages++] = optarg;
            break;
        case 'P':
            if (!parse_int64(optarg, INT_MIN, INT_MAX, &v)) {
                rc = usage_error("submit: --priority needs an integer, got '%s'", optarg);
                goto out;
            }
            args.priority = (int)v;
            break;
        default:
            rc = help_or_option_error(c, argv);
            goto out;
        }
    }
    if ((rc = reject_extra(argc, argv)) != 0)
        goto out;
    if (event == NULL) {
        rc = usage_error("submit: --event is required");
        goto out;
    }
    if (!parse_int64(event, 1, INT64_MAX, &args.event_id)) {
        rc = usage_error("submit: --event needs a positive integer id, got '%s'", event);
        goto out;
    }
    if (args.title == NULL || args.title[0] == '\0') {
        rc = usage_error("submit: --title is required (non-empty)");
        goto out;
    }
    if ((rc = load_config(&cfg)) != 0)
        goto out;
    if (ev_cli_submit(cfg, &args, &id, err, sizeof(err)) != 0) {
        rc = fail(err);
    } else {
        printf("%" PRId64 "\n", id);
        rc = 0;
    }
out:
    ev_config_free(cfg);
    free(images);
    return rc;
}

static int cmd_show(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    ev_config_t *cfg = NULL;
    char err[1024] = "";
    char *json = NULL;
    int64_t id;
    int c, rc;

    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        return help_or_option_error(c, argv);
    }
    if (optind >= argc)
        return usage_error("show: a submission id is required");
    if (!parse_int64(argv[optind], 1, INT64_MAX, &id))
        return usage_error("show: '%s' is not a submission id", argv[optind]);
    optind++;
    if ((rc = reject_extra(argc, argv)) != 0)
        return rc;
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    if (ev_cli_show(cfg, id, &json, err, sizeof(err)) != 0) {
        rc = fail(err);
    } else {
        printf("%s\n", json);
        rc = 0;
    }
    free(json);
    ev_config_free(cfg);
    return rc;
}

static int cmd_healthcheck(int argc, char **argv)
{
    bool ready = false;
    const bool_flag_t flags[] = {{"ready", &ready}, {NULL, NULL}};
    ev_config_t *cfg = NULL;
    char err[512] = "";
    int rc;

    if ((rc = flags_then_config(argc, argv, flags, &cfg)) != 0 || cfg == NULL)
        return rc;
    if ((rc = curl_init_or_free(cfg)) != 0)
        return rc;
    rc = ev_cli_healthcheck(cfg, ready, 0, err, sizeof(err)) != 0 ? fail(err) : 0;
    curl_global_cleanup();
    ev_config_free(cfg);
    return rc;
}

static int cmd_requeue(int argc, char **argv)
{
    static const struct option opts[] = {
        {"status", required_argument, NULL, 's'}, {"id", required_argument, NULL, 'i'},
        {"event", required_argument, NULL, 'e'},  {"dry-run", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int64_t *ids = ev_calloc((size_t)argc + 1, sizeof(*ids));
    ev_queue_selector_t sel = {.ids = ids};
    ev_config_t *cfg = NULL;
    char err[1024] = "", *report = NULL;
    bool dry_run = false;
    int c, rc;

    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            sel.status = optarg;
            break;
        case 'i':
            if (!parse_int64(optarg, 1, INT64_MAX, &ids[sel.nids])) {
                rc = usage_error("requeue: --id needs a submission id, got '%s'", optarg);
                goto out;
            }
            sel.nids++;
            break;
        case 'e':
            if (!parse_int64(optarg, 1, INT64_MAX, &sel.event_id)) {
                rc = usage_error("requeue: --event needs an event id, got '%s'", optarg);
                goto out;
            }
            break;
        case 'n':
            dry_run = true;
            break;
        default:
            rc = help_or_option_error(c, argv);
            goto out;
        }
    }
    /* Further ids may follow the last --id: `requeue --id 4 5 6`. */
    for (; optind < argc && sel.nids > 0; optind++) {
        if (!parse_int64(argv[optind], 1, INT64_MAX, &ids[sel.nids]))
            break;
        sel.nids++;
    }
    if ((rc = reject_extra(argc, argv)) != 0)
        goto out;
    if ((sel.status == NULL) == (sel.nids == 0)) {
        rc = usage_error("requeue: give either --status S or --id N...");
        goto out;
    }
    if (sel.status && !ev_queue_status_valid(sel.status)) {
        rc = usage_error("requeue: unknown status '%s'", sel.status);
        goto out;
    }
    if ((rc = load_config(&cfg)) != 0)
        goto out;
    rc = ev_console_requeue(cfg, &sel, dry_run, ev_console_cli_actor(), &report, err, sizeof(err));
    rc = console_done(rc, report, err);
out:
    ev_config_free(cfg);
    free(ids);
    return rc;
}

static int cmd_cancel(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int64_t *ids = ev_calloc((size_t)argc + 1, sizeof(*ids));
    ev_config_t *cfg = NULL;
    char err[1024] = "", *report = NULL;
    size_t n = 0;
    int c, rc;

    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        rc = help_or_option_error(c, argv);
        goto out;
    }
    for (; optind < argc; optind++) {
        if (!parse_int64(argv[optind], 1, INT64_MAX, &ids[n])) {
            rc = usage_error("cancel: '%s' is not a submission id", argv[optind]);
            goto out;
        }
        n++;
    }
    if (n == 0) {
        rc = usage_error("cancel: at least one submission id is required");
        goto out;
    }
    if ((rc = load_config(&cfg)) != 0)
        goto out;
    rc = ev_console_cancel(cfg, ids, n, ev_console_cli_actor(), &report, err, sizeof(err));
    rc = console_done(rc, report, err);
out:
    ev_config_free(cfg);
    free(ids);
    return rc;
}

static int token_create(int argc, char **argv)
{
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {"event", required_argument, NULL, 'e'},
                                         {"admin", no_argument, NULL, 'a'},
                                         {NULL, 0, NULL, 0}};
    const char *name = NULL, *event = NULL;
    bool admin = false;
    int64_t event_id = 0, id = 0;
    ev_config_t *cfg = NULL;
    char err[1024] = "", *token = NULL;
    int c, rc;

    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (c == 'n')
            name = optarg;
        else if (c == 'e')
            event = optarg;
        else if (c == 'a')
            admin = true;
        else
            return option_error(c, argv);
    }
    if ((rc = reject_extra(argc, argv)) != 0)
        return rc;
    if (name == NULL || name[0] == '\0')
        return usage_error("token create: --name is required (non-empty)");
    if (admin == (event != NULL))
        return usage_error("token create: give exactly one of --event ID and --admin");
    if (event && !parse_int64(event, 1, INT64_MAX, &event_id))
        return usage_error("token create: --event needs a positive integer id, got '%s'", event);
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    if (ev_cli_token_create(cfg, name, admin, event_id, &token, &id, err, sizeof(err)) != 0) {
        rc = fail(err);
    } else {
        /* The token is shown this once: only its hash is stored. */
        printf("%s\ntoken %" PRId64 " created (%s); store it now, it cannot be shown again\n",
               token, id, admin ? "admin" : "event");
        memset(token, 0, strlen(token));
        rc = 0;
    }
    free(token);
    ev_config_free(cfg);
    return rc;
}

/* `providers check`: the table on stdout; exit 0 only when every check has
 * a model known to answer it. */
static int cmd_providers(int argc, char **argv)
{
    ev_config_t *cfg = NULL;
    char err[512] = "", *text = NULL;
    bool ok = false;
    int rc;

    if (argc < 2 || strcmp(argv[1], "check") != 0)
        return usage_error("'providers' needs the sub-command: check");
    if (argc > 2)
        return usage_error("unexpected argument '%s'", argv[2]);
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    if ((rc = curl_init_or_free(cfg)) != 0)
        return rc;
    rc = ev_cli_providers_check(cfg, &text, &ok, err, sizeof(err));
    if (rc != 0) {
        rc = fail(err);
    } else {
        fputs(text, stdout);
        rc = ok ? 0 : fail("some check has no usable model (see the table above)");
    }
    free(text);
    curl_global_cleanup();
    ev_config_free(cfg);
    return rc;
}

/* Ends a `list` or `ACTION ID` sub-command: prints the list (text), or for
 * an action "WHAT ID DONE", or the failure; frees text. */
static int list_or_act_done(int rc, char *text, const char *err, const char *what, int64_t id,
                            const char *done)
{
    if (rc != 0)
        rc = fail(err);
    else if (text)
        fputs(text, stdout);
    else
        printf("%s %" PRId64 " %s\n", what, id, done);
    free(text);
    return rc;
}

static int cmd_token(int argc, char **argv)
{
    ev_config_t *cfg = NULL;
    char err[1024] = "", *text = NULL;
    int64_t id = 0;
    int rc;

    if (argc < 2)
        return usage_error("'token' needs a sub-command: create, list or revoke");
    if (strcmp(argv[1], "create") == 0)
        return token_create(argc - 1, argv + 1);
    if (strcmp(argv[1], "list") == 0) {
        if (argc > 2)
            return usage_error("unexpected argument '%s'", argv[2]);
    } else if (strcmp(argv[1], "revoke") == 0) {
        if (argc != 3 || !parse_int64(argv[2], 1, INT64_MAX, &id))
            return usage_error("token revoke: needs one token id");
    } else {
        return usage_error("unknown token sub-command '%s'", argv[1]);
    }
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    if (id == 0)
        rc = ev_cli_token_list(cfg, &text, err, sizeof(err));
    else
        rc = ev_cli_token_revoke(cfg, id, err, sizeof(err));
    rc = list_or_act_done(rc, text, err, "token", id, "revoked");
    ev_config_free(cfg);
    return rc;
}

static int cmd_webhooks(int argc, char **argv)
{
    ev_config_t *cfg = NULL;
    char err[1024] = "", *text = NULL;
    bool failed = false;
    int64_t id = 0;
    int rc;

    if (argc < 2)
        return usage_error("'webhooks' needs a sub-command: list or retry");
    if (strcmp(argv[1], "list") == 0) {
        if (argc > 3 || (argc == 3 && strcmp(argv[2], "--failed") != 0))
            return usage_error("webhooks list: the only option is --failed");
        failed = argc == 3;
    } else if (strcmp(argv[1], "retry") == 0) {
        if (argc != 3 || !parse_int64(argv[2], 1, INT64_MAX, &id))
            return usage_error("webhooks retry: needs one delivery id");
    } else {
        return usage_error("unknown webhooks sub-command '%s'", argv[1]);
    }
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    if (id == 0)
        rc = ev_cli_webhooks_list(cfg, failed, &text, err, sizeof(err));
    else
        rc = ev_cli_webhooks_retry(cfg, id, err, sizeof(err));
    rc = list_or_act_done(rc, text, err, "webhook delivery", id, "will be sent again");
    ev_config_free(cfg);
    return rc;
}

static int cmd_status(int argc, char **argv)
{
    bool json = false;
    const bool_flag_t flags[] = {{"json", &json}, {NULL, NULL}};
    ev_config_t *cfg = NULL;
    char err[1024] = "";
    char *text = NULL;
    int rc;

    if ((rc = flags_then_config(argc, argv, flags, &cfg)) != 0 || cfg == NULL)
        return rc;
    if (ev_cli_status(cfg, json, &text, err, sizeof(err)) != 0) {
        rc = fail(err);
    } else {
        printf("%s%s", text, json ? "\n" : "");
        rc = 0;
    }
    free(text);
    ev_config_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    const char *cmd;

    /* The parse server (see sandbox.h) needs no configuration and no threads. */
    if (argc >= 2 && strcmp(argv[1], EV_SANDBOX_SERVER_ARG) == 0)
        return ev_sandbox_server_main(argc, argv);
    opterr = 0; /* errors are reported by usage_error, in our words */
    if (argc < 2)
        return usage_error("missing command");
    cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf(PROG " %s\n", EV_VERSION);
        return 0;
    }
    /* Each command parses argv[1..]: argv[1] plays the program name. */
    if (strcmp(cmd, "migrate") == 0)
        return cmd_migrate(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "event") == 0)
        return cmd_event(argc - 1, argv + 1);
    if (strcmp(cmd, "submit") == 0)
        return cmd_submit(argc - 1, argv + 1);
    if (strcmp(cmd, "show") == 0)
        return cmd_show(argc - 1, argv + 1);
    if (strcmp(cmd, "status") == 0)
        return cmd_status(argc - 1, argv + 1);
    if (strcmp(cmd, "token") == 0)
        return cmd_token(argc - 1, argv + 1);
    if (strcmp(cmd, "webhooks") == 0)
        return cmd_webhooks(argc - 1, argv + 1);
    if (strcmp(cmd, "healthcheck") == 0)
        return cmd_healthcheck(argc - 1, argv + 1);
    if (strcmp(cmd, "requeue") == 0)
        return cmd_requeue(argc - 1, argv + 1);
    if (strcmp(cmd, "cancel") == 0)
        return cmd_cancel(argc - 1, argv + 1);
    if (strcmp(cmd, "spend") == 0)
        return cmd_spend(argc - 1, argv + 1);
    if (strcmp(cmd, "provider") == 0)
        return cmd_provider(argc - 1, argv + 1);
    if (strcmp(cmd, "breaker") == 0)
        return cmd_breaker(argc - 1, argv + 1);
    if (strcmp(cmd, "emergency") == 0)
        return cmd_emergency(argc - 1, argv + 1);
    if (strcmp(cmd, "providers") == 0)
        return cmd_providers(argc - 1, argv + 1);
    if (cmd[0] == '-')
        return usage_error("unknown option '%s'", cmd);
    return usage_error("unknown command '%s'", cmd);
}
