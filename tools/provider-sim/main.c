/*
 * main.c - provider-sim: a loopback Gemini + Groq simulator.
 *
 * What: turns argv into the two providers' initial settings and the server
 * options, starts the server, writes the chosen port to --port-file, logs one
 * line, and waits for SIGTERM/SIGINT to stop cleanly (exit 0).
 *
 * How: every per-provider flag becomes a one-key JSON object applied with
 * sim_settings_apply, so flags and the control API validate identically.
 * SIGTERM/SIGINT are blocked before any thread starts and taken with
 * sigwait() on the main thread, so no handler runs in signal context.
 *
 * Threads: main only; the server's threads are started by sim_server_start.
 */
#include "sim.h"

#include "ev/error.h"
#include "ev/log.h"
#include "ev/util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BOTH 3u

/* A flag that sets one provider setting: --gemini-X, --groq-X, or --X for both. */
typedef struct {
    const char *flag; /* without the provider prefix */
    const char *key;  /* settings key */
    char type;        /* 'i' integer, 'd' number, 's' string, 'b' boolean, 'j' JSON object */
    unsigned provs;   /* which prefixes exist; BOTH also allows the bare flag */
} flag_t;

static const flag_t flags[] = {
    {"rpm", "rpm", 'i', BOTH},
    {"window-s", "window_s", 'd', BOTH},
    {"rpd", "rpd", 'i', BOTH},
    {"tpm", "tpm", 'i', 2},
    {"latency-ms", "latency_ms", 'i', BOTH},
    {"jitter-ms", "jitter_ms", 'i', BOTH},
    {"key", "key", 's', BOTH},
    {"models", "models", 's', BOTH},
    {"vision-models", "vision_models", 's', 2},
    {"fault", "fault", 's', BOTH},
    {"fault-rate", "fault_rate", 'd', BOTH},
    {"fail-next", "fail_next", 'i', BOTH},
    {"hang-ms", "hang_ms", 'i', BOTH},
    {"max-body-bytes", "max_body_bytes", 'i', BOTH},
    {"vision-max-bytes", "vision_max_bytes", 'i', 2},
    {"max-images", "max_images", 'i', 2},
    {"require-json-mode", "require_json_mode", 'b', BOTH},
    {"set", NULL, 'j', BOTH},
};

static void usage(FILE *f)
{
    fprintf(
        f, "usage: provider-sim [options]\n"
           "\n"
           "A loopback simulator of the Gemini and Groq APIs: strict request validation,\n"
           "real error bodies, rate limits, latency and fault injection, a control API.\n"
           "\n"
           "  --addr A              IPv4 address to bind [127.0.0.1]\n"
           "  --port N              port, 0 = any free port [0]\n"
           "  --port-file PATH      write the bound port to PATH once listening\n"
           "  --max-connections N   concurrent connections (one thread each) [1024]\n"
           "  --log-level L         debug|info|warn|error|off [info]\n"
           "\n"
           "Provider settings (--gemini-X or --groq-X; the bare --X sets both; the\n"
           "OpenAI-compatible endpoint at /openai/v1 takes the --groq-X settings):\n"
           "  --rpm N               requests per minute, 0 = unlimited [gemini 1000, groq 30]\n"
           "  --window-s S          sliding window; admits rpm*S/60 per window [60]\n"
           "  --rpd N               requests per day (until reset), 0 = unlimited [gemini 0, groq "
           "14400]\n"
           "  --groq-tpm N          Groq tokens per minute: a bigger request gets 413 [300000]\n"
           "  --latency-ms N        answer latency [0]   --jitter-ms N  +- uniform jitter [0]\n"
           "  --key K               the API key to expect; unset = any non-empty key\n"
           "  --models LIST         comma-separated accepted models\n"
           "  --groq-vision-models LIST   models that take images\n"
           "  --fault MODE          none|overloaded|internal|deadline|html|empty|garbage|blocked|\n"
           "                        safety|truncated|hang|daily_quota|array_error|fenced|bad_key|\n"
           "                        too_large|json_failed [none]\n"
           "  --fault-rate F        fraction of requests faulted [1]\n"
           "  --fail-next N         fault only the next N requests\n"
           "  --hang-ms N           how long 'hang' lasts, 0 = until the client leaves [0]\n"
           "  --max-body-bytes N    request size limit [20971520]\n"
           "  --groq-vision-max-bytes N   request size limit with images [4194304]\n"
           "  --groq-max-images N   images per request [5]\n"
           "  --require-json-mode true|false  reject requests not asking for JSON [true]\n"
           "  --set JSON            any settings as a control-API JSON object\n"
           "\n"
           "Endpoints: POST /gemini/v1beta/models/{model}:generateContent,\n"
           "POST /groq/openai/v1/chat/completions, GET /control/stats,\n"
           "GET|POST /control/{gemini|groq}, POST /control/reset[?keep_settings=1],\n"
           "POST /control/reset_peak, GET /healthz.\n"
           "See tools/provider-sim/README.md.\n");
}

/* Build the JSON value a flag's text stands for; NULL when it does not parse. */
static json_object *flag_value(const flag_t *fl, const char *text)
{
    char *end = NULL;
    switch (fl->type) {
    case 'i': {
        errno = 0;
        long long x = strtoll(text, &end, 10);
        if (errno || !*text || *end)
            return NULL;
        return json_object_new_int64(x);
    }
    case 'd': {
        errno = 0;
        double x = strtod(text, &end);
        if (errno || !*text || *end)
            return NULL;
        return json_object_new_double(x);
    }
    case 'b':
        if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0)
            return json_object_new_boolean(1);
        if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0)
            return json_object_new_boolean(0);
        return NULL;
    case 's':
        return json_object_new_string(text);
    default:
        return NULL;
    }
}

/* Apply one provider flag; returns 0 or EV_EINVAL after printing why. */
static int apply_flag(sim_settings_t *set, const char *arg, const char *value)
{
    const char *name = arg + 2;
    unsigned provs = BOTH;
    if (strncmp(name, "gemini-", 7) == 0) {
        provs = 1;
        name += 7;
    } else if (strncmp(name, "groq-", 5) == 0) {
        provs = 2;
        name += 5;
    }
    const flag_t *fl = NULL;
    for (size_t i = 0; i < EV_ARRAY_LEN(flags); i++)
        if (strcmp(flags[i].flag, name) == 0)
            fl = &flags[i];
    if (fl && ((provs != BOTH && !(fl->provs & provs)) || (provs == BOTH && fl->provs != BOTH))) {
        fprintf(stderr, "provider-sim: unknown option %s (see --help)\n", arg);
        return EV_EINVAL;
    }
    json_object *obj = NULL;
    if (!fl) {
        /* Any other setting: --gemini-retry-info-rate 0.5 is {"retry_info_rate":0.5}.
         * A number or boolean is taken as such, anything else as a string;
         * the settings table validates the rest. */
        char key[128];
        snprintf(key, sizeof(key), "%s", name);
        for (char *c = key; *c; c++)
            if (*c == '-')
                *c = '_';
        char err[200];
        json_object *v = sim_json_parse(value, strlen(value), err, sizeof(err));
        if (!v ||
            !(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double) ||
              json_object_is_type(v, json_type_boolean))) {
            json_object_put(v);
            v = json_object_new_string(value);
        }
        obj = json_object_new_object();
        json_object_object_add(obj, key, v);
    } else if (fl->type == 'j') {
        char err[200];
        obj = sim_json_parse(value, strlen(value), err, sizeof(err));
        if (!obj) {
            fprintf(stderr, "provider-sim: %s: invalid JSON: %s\n", arg, err);
            return EV_EINVAL;
        }
    } else {
        json_object *v = flag_value(fl, value);
        if (!v) {
            fprintf(stderr, "provider-sim: %s: invalid value '%s'\n", arg, value);
            return EV_EINVAL;
        }
        obj = json_object_new_object();
        json_object_object_add(obj, fl->key, v);
    }
    int rc = 0;
    for (int p = 0; p < SIM_NPROV && rc == 0; p++) {
        if (!(provs & (1u << sim_wire(p))))
            continue;
        char err[SIM_REASON_MAX];
        rc = sim_settings_apply(&set[p], (sim_prov_id_t)p, obj, err, sizeof(err));
        if (rc < 0)
            fprintf(stderr, "provider-sim: %s: %s\n", arg, err);
    }
    json_object_put(obj);
    return rc;
}

static int write_port_file(const char *path, int port)
{
    char *tmp = ev_asprintf("%s.tmp.%d", path, (int)getpid());
    int rc = EV_EIO;
    FILE *f = fopen(tmp, "w");
    if (!f)
        goto out;
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0)
        goto out;
    /* Readers see either no file or the whole number. */
    if (rename(tmp, path) != 0)
        goto out;
    rc = 0;
out:
    if (rc < 0)
        unlink(tmp);
    free(tmp);
    return rc;
}

static int parse_uint(const char *s, long long lo, long long hi, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || !*s || *end || x < lo || x > hi)
        return EV_EINVAL;
    *out = x;
    return 0;
}

int main(int argc, char **argv)
{
    sim_settings_t set[SIM_NPROV];
    sim_provider_t prov[SIM_NPROV];
    sim_server_options_t opt = SIM_SERVER_OPTIONS_INIT;
    const char *port_file = NULL;
    sim_server_t *srv = NULL;
    bool started = false;
    int rc = 2;

    for (int p = 0; p < SIM_NPROV; p++)
        sim_settings_default(&set[p], (sim_prov_id_t)p);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("provider-sim %s\n", EV_VERSION);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "provider-sim: unexpected argument '%s' (see --help)\n", a);
            return 2;
        }
        /* Accept --flag=value as well as --flag value. */
        char name[128];
        const char *value = NULL;
        const char *eq = strchr(a, '=');
        if (eq) {
            snprintf(name, sizeof(name), "%.*s", (int)(eq - a), a);
            value = eq + 1;
        } else {
            snprintf(name, sizeof(name), "%s", a);
            if (i + 1 >= argc) {
                fprintf(stderr, "provider-sim: %s needs a value (see --help)\n", a);
                return 2;
            }
            value = argv[++i];
        }
        long long x = 0;
        if (strcmp(name, "--addr") == 0) {
            opt.addr = value;
        } else if (strcmp(name, "--port") == 0) {
            if (parse_uint(value, 0, 65535, &x) < 0) {
                fprintf(stderr, "provider-sim: --port must be in [0, 65535]\n");
                return 2;
            }
            opt.port = (int)x;
        } else if (strcmp(name, "--port-file") == 0) {
            port_file = value;
        } else if (strcmp(name, "--max-connections") == 0) {
            if (parse_uint(value, 1, 100000, &x) < 0) {
                fprintf(stderr, "provider-sim: --max-connections must be in [1, 100000]\n");
                return 2;
            }
            opt.max_connections = (unsigned)x;
        } else if (strcmp(name, "--log-level") == 0) {
            ev_log_level_t lvl;
            if (ev_log_parse_level(&lvl, value) < 0) {
                fprintf(stderr, "provider-sim: --log-level must be debug|info|warn|error|off\n");
                return 2;
            }
            ev_log_set_level(lvl);
        } else if (apply_flag(set, name, value) < 0) {
            return 2;
        }
    }

    /* Block the stop signals in every thread; main takes them with sigwait. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    for (int p = 0; p < SIM_NPROV; p++)
        sim_provider_init(&prov[p], (sim_prov_id_t)p, &set[p]);
    started = true;
    int err = sim_server_start(&srv, &opt, prov);
    if (err < 0) {
        fprintf(stderr, "provider-sim: cannot listen on %s:%d: %s\n", opt.addr, opt.port,
                err == EV_EINVAL ? "invalid address" : "bind failed (port in use?)");
        goto out;
    }
    int port = sim_server_port(srv);
    if (port_file && write_port_file(port_file, port) < 0) {
        fprintf(stderr, "provider-sim: cannot write --port-file %s: %s\n", port_file,
                strerror(errno));
        goto out;
    }
    char gem[96], grq[96], oai[96];
    snprintf(gem, sizeof(gem), "http://%s:%d/gemini/v1beta", opt.addr, port);
    snprintf(grq, sizeof(grq), "http://%s:%d/groq/openai/v1", opt.addr, port);
    snprintf(oai, sizeof(oai), "http://%s:%d/openai/v1", opt.addr, port);
    char rpm[128] = "";
    for (int p = 0; p < SIM_NPROV; p++) {
        size_t used = strlen(rpm);
        int64_t lim = sim_settings_window_limit(&set[p]);
        if (lim > 0)
            snprintf(rpm + used, sizeof(rpm) - used, "%s%s %lld per %gs", p ? ", " : "",
                     prov[p].name, (long long)lim, set[p].window_s);
        else
            snprintf(rpm + used, sizeof(rpm) - used, "%s%s unlimited", p ? ", " : "", prov[p].name);
    }
    ev_log_kv(EV_LOG_INFO, "provider-sim listening", "gemini_base_url", gem, "groq_base_url", grq,
              "openai_base_url", oai, "limits", rpm, "control", "/control/stats", NULL);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    ev_log(EV_LOG_INFO, "provider-sim stopping on signal %d", sig);
    rc = 0;
out:
    sim_server_stop(srv);
    if (started)
        for (int p = 0; p < SIM_NPROV; p++)
            sim_provider_destroy(&prov[p]);
    return rc;
}
