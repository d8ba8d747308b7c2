/*
 * common.c - small pieces shared by the simulator's provider handlers:
 * replies, strict base64, content sniffing, verdict markers, durations.
 *
 * Every function here is pure or touches only its arguments, so any
 * connection thread may call it; nothing is shared and there are no locks.
 */
#include "sim.h"

#include "ev/clock.h"
#include "ev/error.h"
#include "ev/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- faults */

static const struct {
    const char *name;
    unsigned mask;
} fault_table[] = {
#define SIM_FAULT_ROW(name, str, mask) {str, mask},
    SIM_FAULT_MAP(SIM_FAULT_ROW)
#undef SIM_FAULT_ROW
};

const char *sim_fault_name(sim_fault_t f)
{
    if ((int)f < 0 || f >= SIM_FAULT_COUNT)
        return "unknown";
    return fault_table[f].name;
}

int sim_fault_parse(sim_fault_t *out, const char *s)
{
    for (int i = 0; i < SIM_FAULT_COUNT; i++) {
        if (strcmp(s, fault_table[i].name) == 0) {
            *out = (sim_fault_t)i;
            return 0;
        }
    }
    return EV_EINVAL;
}

const char *sim_prov_name(int id)
{
    static const char *const names[SIM_NPROV] = {"gemini", "groq", "openai"};
    return id >= 0 && id < SIM_NPROV ? names[id] : "?";
}

bool sim_fault_applies(sim_fault_t f, int prov)
{
    if ((int)f < 0 || f >= SIM_FAULT_COUNT)
        return false;
    return (fault_table[f].mask & (1u << sim_wire(prov))) != 0;
}

bool sim_fault_is_early(sim_fault_t f)
{
    return f == SIM_FAULT_BAD_KEY || f == SIM_FAULT_DAILY_QUOTA || f == SIM_FAULT_TOO_LARGE;
}

/* --------------------------------------------------------------- replies */

void sim_reply_json(sim_reply_t *r, int status, json_object *obj, bool pretty)
{
    int flags =
        JSON_C_TO_STRING_NOSLASHESCAPE |
        (pretty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED : JSON_C_TO_STRING_PLAIN);
    size_t len = 0;
    const char *s = json_object_to_json_string_length(obj, flags, &len);
    free(r->body);
    r->body = ev_malloc(len + 2);
    memcpy(r->body, s, len);
    /* Real APIs end their JSON bodies with a newline. */
    r->body[len] = '\n';
    r->body[len + 1] = '\0';
    r->len = len + 1;
    r->status = status;
    snprintf(r->content_type, sizeof(r->content_type), "%s", "application/json; charset=UTF-8");
    json_object_put(obj);
}

void sim_reply_text(sim_reply_t *r, int status, const char *ctype, const char *text)
{
    free(r->body);
    r->body = ev_strdup(text);
    r->len = strlen(text);
    r->status = status;
    snprintf(r->content_type, sizeof(r->content_type), "%s", ctype);
}

void sim_reply_header(sim_reply_t *r, const char *name, const char *fmt, ...)
{
    EV_ASSERT(r->nheaders < SIM_MAX_HEADERS);
    va_list ap;
    va_start(ap, fmt);
    char *value = NULL;
    int n = vasprintf(&value, fmt, ap);
    va_end(ap);
    EV_ASSERT(n >= 0);
    r->hname[r->nheaders] = ev_strdup(name);
    r->hvalue[r->nheaders] = value;
    r->nheaders++;
}

void sim_reply_free(sim_reply_t *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    for (int i = 0; i < r->nheaders; i++) {
        free(r->hname[i]);
        free(r->hvalue[i]);
    }
    r->nheaders = 0;
}

/* ---------------------------------------------------------------- base64 */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int sim_b64_decode(const char *s, size_t n, unsigned char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (n == 0 || n % 4 != 0)
        return EV_EPARSE;
    size_t pad = 0;
    if (s[n - 1] == '=')
        pad++;
    if (s[n - 2] == '=')
        pad++;
    unsigned char *buf = ev_malloc(n / 4 * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        bool last = i + 4 == n;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s[i + (size_t)k];
            if (c == '=' && last && (size_t)k >= 4 - pad) {
                v[k] = 0;
                continue;
            }
            v[k] = b64_value(c);
            if (v[k] < 0) {
                free(buf);
                return EV_EPARSE;
            }
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        buf[o++] = (unsigned char)(w >> 16);
        if (!(last && pad >= 2))
            buf[o++] = (unsigned char)(w >> 8);
        if (!(last && pad >= 1))
            buf[o++] = (unsigned char)w;
    }
    *out = buf;
    *outlen = o;
    return 0;
}

/* ------------------------------------------------------------- sniffing */

static bool starts(const unsigned char *d, size_t n, const void *magic, size_t m)
{
    return n >= m && memcmp(d, magic, m) == 0;
}

bool sim_sniff_matches(const char *mime, const unsigned char *d, size_t n)
{
    if (strcmp(mime, "application/pdf") == 0) {
        /* Readers accept a little junk before the header, as does Gemini. */
        size_t lim = n < 1024 ? n : 1024;
        for (size_t i = 0; i + 5 <= lim; i++)
            if (memcmp(d + i, "%PDF-", 5) == 0)
                return true;
        return false;
    }
    if (strcmp(mime, "image/png") == 0)
        return starts(d, n, "\x89PNG\r\n\x1a\n", 8);
    if (strcmp(mime, "image/jpeg") == 0)
        return starts(d, n, "\xff\xd8\xff", 3);
    if (strcmp(mime, "image/webp") == 0)
        return n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0;
    if (strcmp(mime, "image/gif") == 0)
        return starts(d, n, "GIF87a", 6) || starts(d, n, "GIF89a", 6);
    if (strcmp(mime, "image/heic") == 0 || strcmp(mime, "image/heif") == 0)
        return n >= 12 && memcmp(d + 4, "ftyp", 4) == 0;
    return false;
}

/* --------------------------------------------------------------- verdict */

static const char *const markers[] = {"OFFTOPIC", "BADPDF", "BADIMG"};

/* How a combined question names the verdict it wants for each check. */
static const char *const parts[] = {"\"theme\": {\"valid\"", "\"pdf\": {\"valid\"",
                                    "\"image\": {\"valid\""};
static const char *const part_names[] = {"theme", "pdf", "image"};

unsigned sim_markers_scan(const void *data, size_t n)
{
    unsigned found = 0;
    for (size_t i = 0; i < EV_ARRAY_LEN(markers); i++)
        if (memmem(data, n, markers[i], strlen(markers[i])))
            found |= 1u << i;
    for (size_t i = 0; i < EV_ARRAY_LEN(parts); i++)
        if (memmem(data, n, parts[i], strlen(parts[i])))
            found |= SIM_PART_THEME << i;
    return found;
}

static char *single_verdict(unsigned found);

char *sim_verdict_text(unsigned found, const char *drop)
{
    if (!(found & SIM_PARTS))
        return single_verdict(found);
    /* A combined question: one verdict per part asked, each judged by its
     * own marker (OFFTOPIC the theme, BADPDF the document, BADIMG the images). */
    char *out = ev_strdup("{");
    for (size_t i = 0; i < EV_ARRAY_LEN(parts); i++) {
        if (!(found & (SIM_PART_THEME << i)) || (drop && strcmp(drop, part_names[i]) == 0))
            continue;
        char *v = single_verdict(found & (1u << i));
        char *next = ev_asprintf("%s%s\"%s\":%s", out, out[1] ? "," : "", part_names[i], v);
        free(v);
        free(out);
        out = next;
    }
    char *done = ev_asprintf("%s}", out);
    free(out);
    return done;
}

static char *single_verdict(unsigned found)
{
    found &= SIM_MARKERS;
    if (!found)
        return ev_strdup("{\"valid\":true,\"score\":0.9,\"reason\":"
                         "\"The submission fits the event (simulated verdict: no "
                         "OFFTOPIC, BADPDF or BADIMG marker found).\"}");
    char names[64] = "";
    for (size_t i = 0; i < EV_ARRAY_LEN(markers); i++) {
        if (!(found & (1u << i)))
            continue;
        if (names[0])
            strncat(names, ", ", sizeof(names) - strlen(names) - 1);
        strncat(names, markers[i], sizeof(names) - strlen(names) - 1);
    }
    return ev_asprintf("{\"valid\":false,\"score\":0.1,\"reason\":"
                       "\"Rejected: the request contains the marker %s (simulated verdict).\"}",
                       names);
}

/* ------------------------------------------------------------- durations */

/* Trim trailing zeros (and a trailing dot) of a decimal in place. */
static void trim_decimal(char *s)
{
    if (!strchr(s, '.'))
        return;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '0')
        s[--n] = '\0';
    if (n > 0 && s[n - 1] == '.')
        s[--n] = '\0';
}

void sim_fmt_seconds(char *buf, size_t n, int64_t us)
{
    if (us < 0)
        us = 0;
    /* Round up to the hundredth so a client waiting this long is admitted. */
    int64_t cs = (us + 9999) / 10000;
    snprintf(buf, n, "%lld.%02lld", (long long)(cs / 100), (long long)(cs % 100));
    trim_decimal(buf);
}

void sim_fmt_duration(char *buf, size_t n, int64_t us)
{
    if (us < 0)
        us = 0;
    if (us < 1000000) {
        snprintf(buf, n, "%lldms", (long long)((us + 999) / 1000));
        return;
    }
    int64_t cs = (us + 9999) / 10000; /* hundredths of a second, rounded up */
    int64_t h = cs / 360000, m = cs / 6000 % 60, sec = cs / 100 % 60, frac = cs % 100;
    char secs[32];
    snprintf(secs, sizeof(secs), "%lld.%02lld", (long long)sec, (long long)frac);
    trim_decimal(secs);
    if (h > 0)
        snprintf(buf, n, "%lldh%lldm%ss", (long long)h, (long long)m, secs);
    else if (m > 0)
        snprintf(buf, n, "%lldm%ss", (long long)m, secs);
    else
        snprintf(buf, n, "%ss", secs);
}

/* ------------------------------------------------------------------ misc */

void sim_random_id(char *buf, size_t n)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t i = 0; i < n; i++)
        buf[i] = alphabet[ev_rand_range(0, (int64_t)sizeof(alphabet) - 2)];
    buf[n] = '\0';
}

int64_t sim_now_us(void)
{
    return ev_clock_now_us(ev_clock_system());
}

bool sim_contains_ci(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    if (m == 0)
        return true;
    for (size_t i = 0; i + m <= n; i++)
        if (strncasecmp(hay + i, needle, m) == 0)
            return true;
    return false;
}

int64_t sim_latency_ms(const sim_settings_t *s)
{
    int64_t ms = s->latency_ms;
    if (s->jitter_ms > 0)
        ms += ev_rand_range(-s->jitter_ms, s->jitter_ms);
    return ms < 0 ? 0 : ms;
}

json_object *sim_json_parse(const char *body, size_t len, char *err, size_t errlen)
{
    json_object *obj = NULL;
    json_tokener *tok = json_tokener_new_ex(64);
    EV_ASSERT(tok);
    if (len > (size_t)INT32_MAX - 1) {
        snprintf(err, errlen, "body too large to parse");
        goto out;
    }
    obj = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t at = json_tokener_get_parse_end(tok);
    if (!obj && e == json_tokener_continue) {
        /* A bare number at the very end needs the terminator to finish. */
        obj = json_tokener_parse_ex(tok, "", 1);
        e = json_tokener_get_error(tok);
        at = len;
    }
    if (!obj || e != json_tokener_success) {
        snprintf(err, errlen, "%s at byte %zu",
                 e == json_tokener_continue || at >= len ? "unexpected end of JSON"
                                                         : json_tokener_error_desc(e),
                 at);
        json_object_put(obj);
        obj = NULL;
        goto out;
    }
    for (size_t i = at; i < len; i++) {
        if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n') {
            snprintf(err, errlen, "unexpected data after the JSON value at byte %zu", i);
            json_object_put(obj);
            obj = NULL;
            goto out;
        }
    }
out:
    json_tokener_free(tok);
    return obj;
}

int64_t sim_pdf_pages(const unsigned char *d, size_t n)
{
    int64_t pages = 0;
    static const char *const pats[] = {"/Type /Page", "/Type/Page"};
    for (size_t k = 0; k < EV_ARRAY_LEN(pats); k++) {
        size_t m = strlen(pats[k]);
        const unsigned char *p = d, *end = d + n;
        while (p < end) {
            const unsigned char *hit = memmem(p, (size_t)(end - p), pats[k], m);
            if (!hit)
                break;
            /* "/Type /Pages" is the page tree, not a page. */
            if (hit + m >= end || hit[m] != 's')
                pages++;
            p = hit + m;
        }
    }
    return pages > 0 ? pages : 1;
}
