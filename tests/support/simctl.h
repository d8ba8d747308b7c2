/*
 * simctl.h - run the provider simulator (tools/provider-sim) from a test.
 *
 * simctl_start forks and execs $EV_BUILD_DIR/provider-sim on a free loopback
 * port (the sim writes the port to a --port-file in a private temp dir), and
 * returns once the sim answers GET /healthz. The sim is started with the keys
 * SIMCTL_GEMINI_KEY / SIMCTL_GROQ_KEY, no rate limit (rpm 0) and log level
 * $SIMCTL_LOG_LEVEL (default "warn"); extra_args come after those and so
 * override them. POST /control/reset (simctl_reset) restores these startup
 * settings and zeroes every counter.
 *
 * The control calls use libcurl (a fresh easy handle each). Functions print
 * the reason of a failure on stderr and return a negative EV_E* code.
 * A simctl_t may be used from several threads for the control calls, but
 * start/stop/free belong to one thread: the one that started the sim (the
 * child is asked to die with that thread via PR_SET_PDEATHSIG, so a crashed
 * test never leaves a sim behind).
 */
#ifndef EV_SIMCTL_H
#define EV_SIMCTL_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#define SIMCTL_GEMINI_KEY "sim-gemini-key"
#define SIMCTL_GROQ_KEY "sim-groq-key"

typedef struct simctl simctl_t;

/* Start a sim. extra_args: NULL-terminated provider-sim flags, or NULL.
 * 0, EV_ECONFIG (EV_BUILD_DIR unset or binary missing), EV_EIO (it exited or
 * never answered within 10 s). *out is NULL on failure. */
int simctl_start(simctl_t **out, const char *const *extra_args);

/* http://127.0.0.1:PORT/gemini/v1beta - a GEMINI_BASE_URL. Owned by sim. */
const char *simctl_gemini_url(const simctl_t *sim);
/* http://127.0.0.1:PORT/groq/openai/v1 - a GROQ_BASE_URL. Owned by sim. */
const char *simctl_groq_url(const simctl_t *sim);
/* The OpenAI-compatible endpoint's base URL (".../openai/v1"): Groq's wire
 * format with its own settings and counters ("openai" in control calls). */
const char *simctl_openai_url(const simctl_t *sim);
/* http://127.0.0.1:PORT (control API lives under /control). Owned by sim. */
const char *simctl_base_url(const simctl_t *sim);
int simctl_port(const simctl_t *sim);

/* Change settings of "gemini" or "groq" with a control JSON object, e.g.
 * simctl_set(sim, "gemini", "{\"fault\":\"overloaded\",\"fail_next\":2}").
 * 0, EV_EINVAL (the sim refused it; its message is printed), EV_EHTTP. */
int simctl_set(simctl_t *sim, const char *provider, const char *json);

/* Zero the counters and windows and restore the startup settings. */
int simctl_reset(simctl_t *sim);

/* GET /control/stats as a json-c object ({"uptime_s", "gemini":{...},
 * "groq":{...}}); the caller puts *out. 0 or EV_EHTTP / EV_EPARSE. */
int simctl_stats(simctl_t *sim, json_object **out);

/* One integer counter of a provider ("requests", "ok", "malformed",
 * "rate_limited", "auth_failed", "faults", "in_flight", "max_in_flight",
 * "bytes_in", ...); -1 when it cannot be read. */
int64_t simctl_counter(simctl_t *sim, const char *provider, const char *name);

/* The provider's last malformed-request reason ("" if none); caller frees;
 * NULL when it cannot be read. */
char *simctl_last_malformed(simctl_t *sim, const char *provider);

/* Wait until counter == value, polling every few ms, at most timeout_ms.
 * 0 or EV_ETIMEOUT. */
int simctl_wait_counter(simctl_t *sim, const char *provider, const char *name, int64_t value,
                        int timeout_ms);

/* SIGTERM the sim and wait for it (SIGKILL after 10 s). Returns its exit
 * status (0 = clean stop), 128+signal if it died by a signal, or a negative
 * EV_E* code. Idempotent: later calls return the same status. */
int simctl_stop(simctl_t *sim);

/* Stop if still running, remove the temp dir, free. Accepts NULL. */
void simctl_free(simctl_t *sim);

#endif
