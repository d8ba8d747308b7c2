/*
 * simctl.c - start, steer and stop a provider-sim child process for tests.
 *
 * How: fork + execv of $EV_BUILD_DIR/provider-sim with --port 0 and a
 * --port-file in a mkdtemp directory; readiness is the port file appearing
 * plus GET /healthz answering 200. Control calls are plain libcurl requests
 * to /control/...; stop is SIGTERM + waitpid with a bound.
 *
 * Threads: start/stop/free on the thread that started the sim; control calls
 * from any thread (each uses its own CURL handle; the struct is read-only
 * after start except for the stop status, which only stop/free touch).
 */
#include "simctl.h"

#include "ev/error.h"
#include "ev/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct simctl {
    pid_t pid;  /* child, 0 once reaped */
    int status; /* exit status once reaped */
    int port;
    char dir[64]; /* temp dir holding the port file */
    char *port_file;
    char *base_url, *gemini_url, *groq_url, *openai_url;
};

static void msleep(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct {
    char *data;
    size_t len;
} buf_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    buf_t *b = ud;
    size_t n = size * nmemb;
    b->data = ev_realloc(b->data, b->len + n + 1);
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* One request to the sim; *body_out (if given) gets the body (caller frees). */
static int http(const simctl_t *sim, const char *method, const char *path, const char *body,
                long *status, char **body_out)
{
    int rc = EV_EHTTP;
    buf_t b = {NULL, 0};
    struct curl_slist *hdrs = NULL;
    char *url = ev_asprintf("%s%s", sim->base_url, path);
    CURL *h = curl_easy_init();
    *status = 0;
    if (body_out)
        *body_out = NULL;
    if (!h)
        goto out;
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK)
        goto out;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    rc = 0;
    if (body_out) {
        *body_out = b.data ? b.data : ev_strdup("");
        b.data = NULL;
    }
out:
    free(b.data);
    curl_slist_free_all(hdrs);
    if (h)
        curl_easy_cleanup(h);
    free(url);
    return rc;
}

static int read_port(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int port = -1;
    if (fscanf(f, "%d", &port) != 1)
        port = -1;
    fclose(f);
    return port;
}

/* Reap the child if it exited; returns true when it is gone. */
static bool reap(simctl_t *sim, int flags)
{
    if (sim->pid <= 0)
        return true;
    int st = 0;
    pid_t r = waitpid(sim->pid, &st, flags);
    if (r == sim->pid) {
        sim->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        sim->pid = 0;
        return true;
    }
    return false;
}

int simctl_start(simctl_t **out, const char *const *extra_args)
{
    *out = NULL;
    int rc = EV_ECONFIG;
    char *bin = NULL;
    const char **argv = NULL;
    simctl_t *sim = ev_calloc(1, sizeof(*sim));
    sim->status = -1;
    const char *build = getenv("EV_BUILD_DIR");
    if (!build || !*build) {
        fprintf(stderr, "simctl: EV_BUILD_DIR is not set (ctest sets it)\n");
        goto out;
    }
    bin = ev_asprintf("%s/provider-sim", build);
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "simctl: %s is not an executable: %s\n", bin, strerror(errno));
        goto out;
    }
    snprintf(sim->dir, sizeof(sim->dir), "/tmp/simctl-XXXXXX");
    if (!mkdtemp(sim->dir)) {
        fprintf(stderr, "simctl: mkdtemp: %s\n", strerror(errno));
        sim->dir[0] = '\0';
        rc = EV_EIO;
        goto out;
    }
    sim->port_file = ev_asprintf("%s/port", sim->dir);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    const char *level = getenv("SIMCTL_LOG_LEVEL");
    const char *fixed[] = {bin,
                           "--addr",
                           "127.0.0.1",
                           "--port",
                           "0",
                           "--port-file",
                           sim->port_file,
                           "--log-level",
                           level && *level ? level : "warn",
                           "--gemini-key",
                           SIMCTL_GEMINI_KEY,
                           "--groq-key",
                           SIMCTL_GROQ_KEY,
                           "--rpm",
                           "0"};
    size_t nfixed = EV_ARRAY_LEN(fixed), nextra = 0;
    while (extra_args && extra_args[nextra])
        nextra++;
    argv = ev_calloc(nfixed + nextra + 1, sizeof(*argv));
    memcpy(argv, fixed, sizeof(fixed));
    for (size_t i = 0; i < nextra; i++)
        argv[nfixed + i] = extra_args[i];

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "simctl: fork: %s\n", strerror(errno));
        rc = EV_EIO;
        goto out;
    }
    if (pid == 0) {
        /* Die with the test; if it is already gone, do not start at all. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(126);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    sim->pid = pid;

    rc = EV_EIO;
    int64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        if (reap(sim, WNOHANG)) {
            fprintf(stderr, "simctl: provider-sim exited during start (status %d)\n", sim->status);
            goto out;
        }
        int port = read_port(sim->port_file);
        if (port > 0 && !sim->base_url) {
            sim->port = port;
            sim->base_url = ev_asprintf("http://127.0.0.1:%d", port);
            sim->gemini_url = ev_asprintf("%s/gemini/v1beta", sim->base_url);
            sim->groq_url = ev_asprintf("%s/groq/openai/v1", sim->base_url);
            sim->openai_url = ev_asprintf("%s/openai/v1", sim->base_url);
        }
        long status = 0;
        if (sim->base_url && http(sim, "GET", "/healthz", NULL, &status, NULL) == 0 &&
            status == 200) {
            rc = 0;
            break;
        }
        msleep(5);
    }
    if (rc < 0)
        fprintf(stderr, "simctl: provider-sim did not answer within 10 s\n");
out:
    free(argv);
    free(bin);
    if (rc < 0) {
        simctl_free(sim);
        sim = NULL;
    }
    *out = sim;
    return rc;
}

const char *simctl_gemini_url(const simctl_t *sim)
{
    return sim->gemini_url;
}
const char *simctl_groq_url(const simctl_t *sim)
{
    return sim->groq_url;
}

const char *simctl_openai_url(const simctl_t *sim)
{
    return sim->openai_url;
}
const char *simctl_base_url(const simctl_t *sim)
{
    return sim->base_url;
}
int simctl_port(const simctl_t *sim)
{
    return sim->port;
}

int simctl_set(simctl_t *sim, const char *provider, const char *json)
{
    char *path = ev_asprintf("/control/%s", provider);
    char *body = NULL;
    long status = 0;
    int rc = http(sim, "POST", path, json, &status, &body);
    if (rc == 0 && status != 200) {
        fprintf(stderr, "simctl: POST %s %s -> %ld %s", path, json, status, body ? body : "");
        rc = status == 400 ? EV_EINVAL : EV_EHTTP;
    } else if (rc < 0) {
        fprintf(stderr, "simctl: POST %s failed (transport)\n", path);
    }
    free(body);
    free(path);
    return rc;
}

int simctl_reset(simctl_t *sim)
{
    long status = 0;
    int rc = http(sim, "POST", "/control/reset", "", &status, NULL);
    if (rc == 0 && status != 200)
        rc = EV_EHTTP;
    if (rc < 0)
        fprintf(stderr, "simctl: POST /control/reset failed (status %ld)\n", status);
    return rc;
}

int simctl_stats(simctl_t *sim, json_object **out)
{
    *out = NULL;
    char *body = NULL;
    long status = 0;
    int rc = http(sim, "GET", "/control/stats", NULL, &status, &body);
    if (rc == 0 && status != 200)
        rc = EV_EHTTP;
    if (rc == 0) {
        *out = json_tokener_parse(body);
        if (!*out || !json_object_is_type(*out, json_type_object)) {
            json_object_put(*out);
            *out = NULL;
            rc = EV_EPARSE;
        }
    }
    if (rc < 0)
        fprintf(stderr, "simctl: GET /control/stats failed (%s)\n", ev_errname(rc));
    free(body);
    return rc;
}

/* The provider's stats object inside a stats document (borrowed). */
static json_object *prov_stats(json_object *stats, const char *provider)
{
    json_object *p = NULL;
    if (!stats || !json_object_object_get_ex(stats, provider, &p))
        return NULL;
    return p;
}

int64_t simctl_counter(simctl_t *sim, const char *provider, const char *name)
{
    json_object *stats = NULL, *v = NULL;
    int64_t out = -1;
    if (simctl_stats(sim, &stats) < 0)
        return -1;
    json_object *p = prov_stats(stats, provider);
    if (p && json_object_object_get_ex(p, name, &v) && json_object_is_type(v, json_type_int))
        out = json_object_get_int64(v);
    else
        fprintf(stderr, "simctl: no counter %s.%s\n", provider, name);
    json_object_put(stats);
    return out;
}

char *simctl_last_malformed(simctl_t *sim, const char *provider)
{
    json_object *stats = NULL, *v = NULL;
    char *out = NULL;
    if (simctl_stats(sim, &stats) < 0)
        return NULL;
    json_object *p = prov_stats(stats, provider);
    if (p && json_object_object_get_ex(p, "last_malformed", &v))
        out = ev_strdup(json_object_get_string(v));
    json_object_put(stats);
    return out;
}

int simctl_wait_counter(simctl_t *sim, const char *provider, const char *name, int64_t value,
                        int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int64_t v = simctl_counter(sim, provider, name);
        if (v == value)
            return 0;
        if (now_ms() >= deadline) {
            fprintf(stderr, "simctl: %s.%s is %lld, waited %d ms for %lld\n", provider, name,
                    (long long)v, timeout_ms, (long long)value);
            return EV_ETIMEOUT;
        }
        msleep(5);
    }
}

int simctl_stop(simctl_t *sim)
{
    if (!sim)
        return EV_EINVAL;
    if (sim->pid > 0) {
        kill(sim->pid, SIGTERM);
        int64_t deadline = now_ms() + 10000;
        while (!reap(sim, WNOHANG) && now_ms() < deadline)
            msleep(5);
        if (sim->pid > 0) {
            fprintf(stderr, "simctl: provider-sim ignored SIGTERM for 10 s; killing it\n");
            kill(sim->pid, SIGKILL);
            reap(sim, 0);
        }
    }
    return sim->status;
}

void simctl_free(simctl_t *sim)
{
    if (!sim)
        return;
    if (sim->pid > 0)
        simctl_stop(sim);
    if (sim->port_file) {
        unlink(sim->port_file);
        free(sim->port_file);
        curl_global_cleanup();
    }
    if (sim->dir[0])
        rmdir(sim->dir);
    free(sim->base_url);
    free(sim->gemini_url);
    free(sim->groq_url);
    free(sim->openai_url);
    free(sim);
}
