/*
 * provider.c - one simulated provider's state: settings, the sliding-window
 * rate limiter, the daily count, the fault draw and the counters.
 *
 * How: settings are plain data copied whole under the provider mutex, so a
 * request works on a consistent snapshot while the control API changes them.
 * The limiter is a sliding log: a ring buffer holding the admission time of
 * every request still inside the window (at most rpm*window/60 entries).
 * Tokens per minute are kept in sixty one-second slots.
 *
 * Threads: every connection thread of the server calls in; the control API
 * (also a connection thread) changes settings. One lock per provider, `mu`,
 * guards settings, window, day count, token slots and last_malformed; it is
 * never held while sleeping or calling out. Counters are relaxed atomics.
 * Lock order: a thread holds at most one provider lock at a time.
 */
#include "sim.h"

#include "ev/error.h"
#include "ev/log.h"
#include "ev/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RELAXED memory_order_relaxed

/* ------------------------------------------------------------- settings */

static void set_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src);
}

void sim_settings_default(sim_settings_t *s, sim_prov_id_t id)
{
    memset(s, 0, sizeof(*s));
    s->window_s = 60;
    s->fault = SIM_FAULT_NONE;
    s->fault_rate = 1.0;
    s->fail_next = -1;
    s->retry_info_rate = 1.0;
    s->shuffle_details = true;
    s->html_status = 502;
    s->require_json_mode = true;
    if (id == SIM_GEMINI) {
        set_str(s->models, sizeof(s->models),
                "gemini-3.5-flash-lite,gemini-3.5-flash,gemini-3.8-flash,gemini-2.5-flash,"
                "gemini-2.5-flash-lite,gemini-2.5-pro,gemini-2.0-flash,"
                "gemini-2.0-flash-lite,gemini-flash-latest,gemini-flash-lite-latest");
        set_str(s->thinking_only, sizeof(s->thinking_only),
                "gemini-2.5-pro,gemini-3.5-flash-lite,gemini-3.5-flash,gemini-3.8-flash");
        s->rpm = 1000;
        s->rpd = 0;
        s->thought_tokens = 300;
        s->max_body_bytes =
            20971520; /* "Request payload size exceeds the limit: 20971520 bytes." */
    } else {
        set_str(s->models, sizeof(s->models),
                "openai/gpt-oss-120b,openai/gpt-oss-20b,llama-3.1-8b-instant,"
                "llama-3.3-70b-versatile");
        set_str(s->vision_models, sizeof(s->vision_models),
                "qwen/qwen3.8-27b,qwen/qwen3.6-27b,meta-llama/llama-4-scout-17b-16e-instruct,"
                "meta-llama/llama-4-maverick-17b-128e-instruct");
        s->rpm = 30;
        s->rpd = 14400;
        s->tpm = 300000;
        s->max_body_bytes = 20971520;
        s->vision_max_bytes = 4194304;
        s->max_images = 5;
    }
}

int64_t sim_settings_window_limit(const sim_settings_t *s)
{
    if (s->rpm <= 0)
        return 0;
    double lim = floor((double)s->rpm * s->window_s / 60.0 + 1e-9);
    return lim < 1 ? 1 : (int64_t)lim;
}

bool sim_list_has(const char *list, const char *name)
{
    size_t n = strlen(name);
    if (n == 0)
        return false;
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0)
            return true;
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

/* One settable key: its name, its type and where it lives. */
typedef enum { K_STR, K_LIST, K_INT, K_DOUBLE, K_BOOL, K_FAULT } kind_t;
typedef struct {
    const char *name;
    kind_t kind;
    size_t off;
    size_t cap;      /* strings: buffer size */
    double min, max; /* numbers: inclusive range */
    unsigned provs;  /* bit 0 Gemini, bit 1 Groq */
} setting_t;

#define OFF(f) offsetof(sim_settings_t, f)
#define CAP(f) sizeof(((sim_settings_t *)0)->f)
static const setting_t keys[] = {
    {"key", K_STR, OFF(key), CAP(key), 0, 0, 3},
    {"models", K_LIST, OFF(models), CAP(models), 0, 0, 3},
    {"vision_models", K_LIST, OFF(vision_models), CAP(vision_models), 0, 0, 2},
    {"thinking_only_models", K_LIST, OFF(thinking_only), CAP(thinking_only), 0, 0, 1},
    {"retired_models", K_LIST, OFF(retired), CAP(retired), 0, 0, 3},
    {"rpm", K_INT, OFF(rpm), 0, 0, 1e7, 3},
    {"window_s", K_DOUBLE, OFF(window_s), 0, 0.05, 3600, 3},
    {"rpd", K_INT, OFF(rpd), 0, 0, 1e9, 3},
    {"tpm", K_INT, OFF(tpm), 0, 0, 1e10, 2},
    {"latency_ms", K_INT, OFF(latency_ms), 0, 0, 600000, 3},
    {"jitter_ms", K_INT, OFF(jitter_ms), 0, 0, 600000, 3},
    {"fault", K_FAULT, OFF(fault), 0, 0, 0, 3},
    {"fault_rate", K_DOUBLE, OFF(fault_rate), 0, 0, 1, 3},
    {"fail_next", K_INT, OFF(fail_next), 0, -1, 1e9, 3},
    {"hang_ms", K_INT, OFF(hang_ms), 0, 0, 3600000, 3},
    {"retry_info_rate", K_DOUBLE, OFF(retry_info_rate), 0, 0, 1, 1},
    {"shuffle_details", K_BOOL, OFF(shuffle_details), 0, 0, 0, 1},
    {"thoughts", K_BOOL, OFF(thoughts), 0, 0, 0, 1},
    {"split_text", K_BOOL, OFF(split_text), 0, 0, 0, 1},
    {"thought_tokens", K_INT, OFF(thought_tokens), 0, 0, 1e6, 1},
    {"max_body_bytes", K_INT, OFF(max_body_bytes), 0, 1, 1 << 30, 3},
    {"vision_max_bytes", K_INT, OFF(vision_max_bytes), 0, 1, 1 << 30, 2},
    {"max_images", K_INT, OFF(max_images), 0, 0, 1000, 2},
    {"html_status", K_INT, OFF(html_status), 0, 400, 599, 3},
    {"require_json_mode", K_BOOL, OFF(require_json_mode), 0, 0, 0, 3},
    {"drop_part", K_STR, OFF(drop_part), CAP(drop_part), 0, 0, 3},
};

static int apply_one(sim_settings_t *s, sim_prov_id_t id, const setting_t *k, json_object *v,
                     char *err, size_t errlen)
{
    char *field = (char *)s + k->off;
    switch (k->kind) {
    case K_STR:
    case K_LIST: {
        char buf[SIM_LIST_MAX] = "";
        if (k->kind == K_LIST && json_object_is_type(v, json_type_array)) {
            /* An array of names is accepted and joined with commas. */
            size_t n = json_object_array_length(v);
            for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(v, i);
                if (!json_object_is_type(e, json_type_string)) {
                    snprintf(err, errlen, "'%s' must be an array of strings", k->name);
                    return EV_EINVAL;
                }
                if (strlen(buf) + json_object_get_string_len(e) + 2 > sizeof(buf)) {
                    snprintf(err, errlen, "'%s' is too long", k->name);
                    return EV_EINVAL;
                }
                size_t used = strlen(buf);
                snprintf(buf + used, sizeof(buf) - used, "%s%s", i ? "," : "",
                         json_object_get_string(e));
            }
        } else if (json_object_is_type(v, json_type_string)) {
            if ((size_t)json_object_get_string_len(v) >= k->cap) {
                snprintf(err, errlen, "'%s' is too long (at most %zu bytes)", k->name, k->cap - 1);
                return EV_EINVAL;
            }
            set_str(buf, sizeof(buf), json_object_get_string(v));
        } else {
            snprintf(err, errlen, "'%s' must be a string%s", k->name,
                     k->kind == K_LIST ? " or an array of strings" : "");
            return EV_EINVAL;
        }
        set_str(field, k->cap, buf);
        return 0;
    }
    case K_INT: {
        if (!json_object_is_type(v, json_type_int)) {
            snprintf(err, errlen, "'%s' must be an integer", k->name);
            return EV_EINVAL;
        }
        int64_t x = json_object_get_int64(v);
        if ((double)x < k->min || (double)x > k->max) {
            snprintf(err, errlen, "'%s' must be in [%.0f, %.0f]", k->name, k->min, k->max);
            return EV_EINVAL;
        }
        *(int64_t *)(void *)field = x;
        return 0;
    }
    case K_DOUBLE: {
        if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double)) {
            snprintf(err, errlen, "'%s' must be a number", k->name);
            return EV_EINVAL;
        }
        double x = json_object_get_double(v);
        if (!(x >= k->min && x <= k->max)) {
            snprintf(err, errlen, "'%s' must be in [%g, %g]", k->name, k->min, k->max);
            return EV_EINVAL;
        }
        *(double *)(void *)field = x;
        return 0;
    }
    case K_BOOL:
        if (!json_object_is_type(v, json_type_boolean)) {
            snprintf(err, errlen, "'%s' must be true or false", k->name);
            return EV_EINVAL;
        }
        *(bool *)(void *)field = json_object_get_boolean(v);
        return 0;
    case K_FAULT: {
        sim_fault_t f;
        if (!json_object_is_type(v, json_type_string) ||
            sim_fault_parse(&f, json_object_get_string(v)) < 0) {
            char names[512] = "";
            for (int i = 0; i < SIM_FAULT_COUNT; i++) {
                if (!sim_fault_applies((sim_fault_t)i, id))
                    continue;
                strncat(names, i ? "|" : "", sizeof(names) - strlen(names) - 1);
                strncat(names, sim_fault_name((sim_fault_t)i), sizeof(names) - strlen(names) - 1);
            }
            snprintf(err, errlen, "'fault' must be one of %s", names);
            return EV_EINVAL;
        }
        if (!sim_fault_applies(f, id)) {
            snprintf(err, errlen, "fault '%s' does not exist for %s", sim_fault_name(f),
                     sim_prov_name(id));
            return EV_EINVAL;
        }
        *(sim_fault_t *)(void *)field = f;
        return 0;
    }
    }
    return EV_EINVAL;
}

int sim_settings_apply(sim_settings_t *s, sim_prov_id_t id, json_object *obj, char *err,
                       size_t errlen)
{
    if (!json_object_is_type(obj, json_type_object)) {
        snprintf(err, errlen, "settings must be a JSON object");
        return EV_EINVAL;
    }
    sim_settings_t next = *s;
    bool fault_set = false, count_set = false;
    json_object_object_foreach(obj, name, v)
    {
        const setting_t *k = NULL;
        for (size_t i = 0; i < EV_ARRAY_LEN(keys); i++)
            if (strcmp(keys[i].name, name) == 0)
                k = &keys[i];
        if (!k || !(k->provs & (1u << sim_wire(id)))) {
            snprintf(err, errlen, "unknown setting '%s' for %s", name, sim_prov_name(id));
            return EV_EINVAL;
        }
        int rc = apply_one(&next, id, k, v, err, errlen);
        if (rc < 0)
            return rc;
        if (k->kind == K_FAULT)
            fault_set = true;
        if (strcmp(k->name, "fail_next") == 0)
            count_set = true;
    }
    /* A fault set without a count applies until changed; a fault of "none"
     * has no count; a count of 0 means no fault at all. */
    if (fault_set && !count_set)
        next.fail_next = -1;
    if (next.fault == SIM_FAULT_NONE || next.fail_next == 0) {
        next.fault = SIM_FAULT_NONE;
        next.fail_next = -1;
    }
    *s = next;
    return 0;
}

json_object *sim_settings_to_json(const sim_settings_t *s, sim_prov_id_t id)
{
    json_object *o = json_object_new_object();
    for (size_t i = 0; i < EV_ARRAY_LEN(keys); i++) {
        const setting_t *k = &keys[i];
        if (!(k->provs & (1u << sim_wire(id))))
            continue;
        const char *field = (const char *)s + k->off;
        json_object *v = NULL;
        switch (k->kind) {
        case K_STR:
            /* The key is a secret of sorts: say only whether one is set. */
            v = json_object_new_string(field[0] ? "(set)" : "(any non-empty key)");
            break;
        case K_LIST:
            v = json_object_new_string(field);
            break;
        case K_INT:
            v = json_object_new_int64(*(const int64_t *)(const void *)field);
            break;
        case K_DOUBLE:
            v = json_object_new_double(*(const double *)(const void *)field);
            break;
        case K_BOOL:
            v = json_object_new_boolean(*(const bool *)(const void *)field);
            break;
        case K_FAULT:
            v = json_object_new_string(sim_fault_name(*(const sim_fault_t *)(const void *)field));
            break;
        }
        json_object_object_add(o, k->name, v);
    }
    json_object_object_add(o, "window_limit", json_object_new_int64(sim_settings_window_limit(s)));
    return o;
}

/* -------------------------------------------------------------- provider */

/* Size the window ring for the current settings and empty it. Caller holds mu. */
static void window_reset(sim_provider_t *p)
{
    int64_t lim = sim_settings_window_limit(&p->settings);
    free(p->win);
    p->win = NULL;
    p->win_cap = (size_t)lim;
    if (lim > 0)
        p->win = ev_calloc((size_t)lim, sizeof(int64_t));
    p->win_head = 0;
    p->win_len = 0;
}

void sim_provider_init(sim_provider_t *p, sim_prov_id_t id, const sim_settings_t *initial)
{
    memset(p, 0, sizeof(*p));
    p->id = id;
    p->name = sim_prov_name(id);
    EV_ASSERT(pthread_mutex_init(&p->mu, NULL) == 0);
    p->settings = *initial;
    p->initial = *initial;
    window_reset(p);
}

void sim_provider_destroy(sim_provider_t *p)
{
    if (!p)
        return;
    free(p->win);
    p->win = NULL;
    pthread_mutex_destroy(&p->mu);
}

void sim_provider_snapshot(sim_provider_t *p, sim_settings_t *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->settings;
    pthread_mutex_unlock(&p->mu);
}

int sim_provider_configure(sim_provider_t *p, json_object *obj, char *err, size_t errlen)
{
    pthread_mutex_lock(&p->mu);
    int64_t old_limit = sim_settings_window_limit(&p->settings);
    double old_window = p->settings.window_s;
    int rc = sim_settings_apply(&p->settings, p->id, obj, err, errlen);
    if (rc == 0 && (sim_settings_window_limit(&p->settings) != old_limit ||
                    p->settings.window_s != old_window))
        window_reset(p);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void sim_provider_reset(sim_provider_t *p, bool restore)
{
    pthread_mutex_lock(&p->mu);
    if (restore)
        p->settings = p->initial;
    window_reset(p);
    p->day_used = 0;
    memset(p->tok_sec, 0, sizeof(p->tok_sec));
    memset(p->tok_stamp, 0, sizeof(p->tok_stamp));
    p->last_malformed[0] = '\0';
    pthread_mutex_unlock(&p->mu);

    _Atomic int64_t *counters[] = {
        &p->requests,  &p->ok,          &p->verdict_valid, &p->verdict_invalid,
        &p->malformed, &p->auth_failed, &p->rate_limited,  &p->too_large,
        &p->faults,    &p->hung,        &p->bytes_in,      &p->bytes_out,
        &p->tokens_in, &p->tokens_out,  &p->model_checks};
    for (size_t i = 0; i < EV_ARRAY_LEN(counters); i++)
        atomic_store_explicit(counters[i], 0, RELAXED);
    for (int i = 0; i < SIM_FAULT_COUNT; i++)
        atomic_store_explicit(&p->fault_served[i], 0, RELAXED);
    sim_provider_reset_peak(p);
}

void sim_provider_reset_peak(sim_provider_t *p)
{
    /* The maximum restarts from what is in flight right now. */
    atomic_store_explicit(&p->max_in_flight, atomic_load_explicit(&p->in_flight, RELAXED), RELAXED);
}

void sim_provider_admit(sim_provider_t *p, int64_t now_us, sim_admit_t *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&p->mu);
    /* The request's snapshot may predate a control call: the live settings decide. */
    const sim_settings_t *cur = &p->settings;
    if (cur->rpd > 0 && p->day_used >= cur->rpd) {
        out->limited = true;
        out->daily = true;
        out->limit = cur->rpd;
        out->retry_us = 0;
        goto out;
    }
    if (p->win_cap > 0) {
        int64_t window_us = (int64_t)(cur->window_s * 1e6);
        while (p->win_len > 0 && p->win[p->win_head] <= now_us - window_us) {
            p->win_head = (p->win_head + 1) % p->win_cap;
            p->win_len--;
        }
        if (p->win_len >= p->win_cap) {
            out->limited = true;
            /* Providers state their per-minute figure, not the window's. */
            out->limit = cur->rpm;
            out->retry_us = p->win[p->win_head] + window_us - now_us;
            if (out->retry_us < 1)
                out->retry_us = 1;
            goto out;
        }
        p->win[(p->win_head + p->win_len) % p->win_cap] = now_us;
        p->win_len++;
    }
    p->day_used++;
out:
    pthread_mutex_unlock(&p->mu);
}

sim_fault_t sim_provider_take_fault(sim_provider_t *p, bool early)
{
    sim_fault_t f = SIM_FAULT_NONE;
    /* Draw outside the lock: ev_rand01 is per-thread. */
    double draw = ev_rand01();
    pthread_mutex_lock(&p->mu);
    sim_settings_t *s = &p->settings;
    if (s->fault == SIM_FAULT_NONE || sim_fault_is_early(s->fault) != early)
        goto out;
    if (s->fail_next > 0) {
        f = s->fault;
        if (--s->fail_next == 0) {
            s->fault = SIM_FAULT_NONE;
            s->fail_next = -1;
        }
    } else if (draw < s->fault_rate) {
        f = s->fault;
    }
out:
    pthread_mutex_unlock(&p->mu);
    return f;
}

void sim_provider_malformed(sim_provider_t *p, const char *reason)
{
    /* The simulator is a tool for finding client bugs: say so where the
     * operator looks (this is the one place a malformed request is decided). */
    ev_log(EV_LOG_INFO, "malformed %s request: %s", p->name, reason);
    atomic_fetch_add_explicit(&p->malformed, 1, RELAXED);
    pthread_mutex_lock(&p->mu);
    set_str(p->last_malformed, sizeof(p->last_malformed), reason);
    pthread_mutex_unlock(&p->mu);
}

void sim_provider_fault_served(sim_provider_t *p, sim_fault_t f)
{
    atomic_fetch_add_explicit(&p->faults, 1, RELAXED);
    if ((int)f >= 0 && f < SIM_FAULT_COUNT)
        atomic_fetch_add_explicit(&p->fault_served[f], 1, RELAXED);
}

bool sim_provider_take_tokens(sim_provider_t *p, int64_t now_us, int64_t tokens, int64_t tpm,
                              int64_t *used, int64_t *retry_us)
{
    int64_t sec = now_us / 1000000;
    bool taken = true;
    pthread_mutex_lock(&p->mu);
    int64_t sum = 0;
    for (int i = 0; i < 60; i++)
        if (p->tok_stamp[i] > sec - 60 && p->tok_stamp[i] <= sec)
            sum += p->tok_sec[i];
    *used = sum;
    *retry_us = 0;
    if (tpm > 0 && sum + tokens > tpm) {
        /* Second s leaves the minute at the start of s + 60. */
        int64_t need = sum + tokens - tpm;
        taken = false;
        for (int64_t s = sec - 59; s <= sec; s++) {
            int i = (int)(s % 60);
            if (p->tok_stamp[i] == s)
                need -= p->tok_sec[i];
            if (need <= 0) {
                *retry_us = (s + 60) * 1000000 - now_us;
                break;
            }
        }
        if (*retry_us <= 0)
            *retry_us = 60000000;
    } else {
        int slot = (int)(sec % 60);
        if (p->tok_stamp[slot] != sec) {
            p->tok_stamp[slot] = sec;
            p->tok_sec[slot] = 0;
        }
        p->tok_sec[slot] += tokens;
    }
    pthread_mutex_unlock(&p->mu);
    return taken;
}

void sim_provider_usage(sim_provider_t *p, int64_t now_us, sim_usage_t *out)
{
    int64_t sec = now_us / 1000000;
    pthread_mutex_lock(&p->mu);
    out->day_used = p->day_used;
    out->tokens_minute = 0;
    for (int i = 0; i < 60; i++)
        if (p->tok_stamp[i] > sec - 60 && p->tok_stamp[i] <= sec)
            out->tokens_minute += p->tok_sec[i];
    pthread_mutex_unlock(&p->mu);
}

void sim_provider_enter(sim_provider_t *p)
{
    int64_t now = atomic_fetch_add_explicit(&p->in_flight, 1, RELAXED) + 1;
    int64_t max = atomic_load_explicit(&p->max_in_flight, RELAXED);
    while (now > max &&
           !atomic_compare_exchange_weak_explicit(&p->max_in_flight, &max, now, RELAXED, RELAXED))
        ;
}

void sim_provider_leave(sim_provider_t *p)
{
    int64_t before = atomic_fetch_sub_explicit(&p->in_flight, 1, RELAXED);
    EV_ASSERT(before > 0);
}

json_object *sim_provider_stats(sim_provider_t *p)
{
    json_object *o = json_object_new_object();
#define C(f)                                                                                       \
    json_object_object_add(o, #f, json_object_new_int64(atomic_load_explicit(&p->f, RELAXED)))
    C(requests);
    C(model_checks);
    C(ok);
    C(verdict_valid);
    C(verdict_invalid);
    C(malformed);
    C(auth_failed);
    C(rate_limited);
    C(too_large);
    C(faults);
    C(hung);
    C(in_flight);
    C(max_in_flight);
    C(bytes_in);
    C(bytes_out);
    C(tokens_in);
    C(tokens_out);
#undef C
    json_object *by = json_object_new_object();
    for (int i = 1; i < SIM_FAULT_COUNT; i++) {
        int64_t n = atomic_load_explicit(&p->fault_served[i], RELAXED);
        if (n > 0)
            json_object_object_add(by, sim_fault_name((sim_fault_t)i), json_object_new_int64(n));
    }
    json_object_object_add(o, "faults_by_mode", by);
    pthread_mutex_lock(&p->mu);
    json_object_object_add(o, "last_malformed", json_object_new_string(p->last_malformed));
    json_object_object_add(o, "day_used", json_object_new_int64(p->day_used));
    int64_t window_us = (int64_t)(p->settings.window_s * 1e6), in_window = 0, now = sim_now_us();
    for (size_t i = 0; i < p->win_len; i++)
        if (p->win[(p->win_head + i) % p->win_cap] > now - window_us)
            in_window++;
    json_object_object_add(o, "window_used", json_object_new_int64(in_window));
    int64_t sec = now / 1000000, tokens_minute = 0;
    for (int i = 0; i < 60; i++)
        if (p->tok_stamp[i] > sec - 60 && p->tok_stamp[i] <= sec)
            tokens_minute += p->tok_sec[i];
    json_object_object_add(o, "tokens_minute", json_object_new_int64(tokens_minute));
    json_object_object_add(o, "fault", json_object_new_string(sim_fault_name(p->settings.fault)));
    json_object_object_add(o, "fail_next", json_object_new_int64(p->settings.fail_next));
    pthread_mutex_unlock(&p->mu);
    return o;
}
