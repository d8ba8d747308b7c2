/*
 * retryhint.c - retry-delay parsers; see retryhint.h.
 *
 * How: one scanner reads "<decimal><unit>" terms into exact integer
 * nanoseconds (no floating point, no locale): the integer part saturates, the
 * fraction keeps only the digits the unit can represent and rounds up when a
 * non-zero digit is dropped. Totals saturate at EV_RETRYHINT_MAX_MS and are
 * converted to milliseconds rounding up. Every read checks for the NUL first,
 * so no input can make a parser read past its end.
 *
 * Threads: pure functions on their arguments; no shared state.
 */
#include "ev/retryhint.h"

#include "ev/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define NS_PER_MS INT64_C(1000000)
#define MAX_NS (EV_RETRYHINT_MAX_MS * NS_PER_MS)

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}
static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static const char *skip_blanks(const char *p)
{
    while (is_blank(*p))
        p++;
    return p;
}

static int64_t sat_add(int64_t a, int64_t b)
{
    return a > MAX_NS - b ? MAX_NS : a + b;
}

static int64_t ns_to_ms(int64_t ns)
{
    int64_t ms = ns / NS_PER_MS + (ns % NS_PER_MS != 0);
    return ms > EV_RETRYHINT_MAX_MS ? EV_RETRYHINT_MAX_MS : ms;
}

/* A decimal number: integer part (saturated) and up to 9 fraction digits.
 * `dropped` is set when a non-zero fraction digit beyond 9 was seen. */
typedef struct decimal {
    int64_t ipart;
    int64_t frac;    /* the kept fraction digits as an integer */
    int frac_digits; /* how many digits `frac` holds */
    bool dropped;
} decimal_t;

/* Reads [digits][.digits] with at least one digit. Returns false (and leaves
 * *pp alone) when there is no number at *pp. */
static bool read_decimal(const char **pp, decimal_t *d)
{
    const char *p = *pp;
    bool any = false;
    memset(d, 0, sizeof(*d));
    while (is_digit(*p)) {
        /* Past 10^15 the value is far beyond any cap: stop growing. */
        if (d->ipart < INT64_C(1000000000000000))
            d->ipart = d->ipart * 10 + (*p - '0');
        p++;
        any = true;
    }
    if (*p == '.') {
        const char *q = p + 1;
        bool frac_any = false;
        while (is_digit(*q)) {
            if (d->frac_digits < 9) {
                d->frac = d->frac * 10 + (*q - '0');
                d->frac_digits++;
            } else if (*q != '0') {
                d->dropped = true;
            }
            q++;
            frac_any = true;
        }
        if (frac_any || any)
            p = q;
        any = any || frac_any;
    }
    if (!any)
        return false;
    *pp = p;
    return true;
}

static int64_t pow10i(int n)
{
    int64_t r = 1;
    while (n-- > 0)
        r *= 10;
    return r;
}

/* The value of d in units of `unit_ns` nanoseconds, in ns, rounded up and
 * saturated at MAX_NS. */
static int64_t decimal_to_ns(const decimal_t *d, int64_t unit_ns)
{
    if (d->ipart > MAX_NS / unit_ns)
        return MAX_NS;
    int64_t ns = d->ipart * unit_ns;
    /* Keep only as many fraction digits as divide the unit exactly
     * (9 for seconds and up, 6 for ms, 3 for us, 0 for ns); a non-zero digit
     * dropped here or earlier rounds up by one nanosecond. */
    int keep = 0;
    while (keep < d->frac_digits && unit_ns % pow10i(keep + 1) == 0)
        keep++;
    int64_t frac = d->frac;
    bool dropped = d->dropped;
    for (int i = d->frac_digits; i > keep; i--) {
        if (frac % 10 != 0)
            dropped = true;
        frac /= 10;
    }
    int64_t frac_ns = frac * (unit_ns / pow10i(keep)) + (dropped ? 1 : 0);
    return sat_add(ns, frac_ns);
}

/* Reads a unit at *pp; returns its size in ns, or 0 when there is none. */
static int64_t read_unit(const char **pp)
{
    const char *p = *pp;
    int64_t unit = 0;
    size_t len = 0;
    if (p[0] == 'h') {
        unit = INT64_C(3600000000000), len = 1;
    } else if (p[0] == 'm' && p[1] == 's') {
        unit = NS_PER_MS, len = 2;
    } else if (p[0] == 'm') {
        unit = INT64_C(60000000000), len = 1;
    } else if (p[0] == 's') {
        unit = INT64_C(1000000000), len = 1;
    } else if (p[0] == 'u' && p[1] == 's') {
        unit = 1000, len = 2;
    } else if ((unsigned char)p[0] == 0xC2 && (unsigned char)p[1] == 0xB5 && p[2] == 's') {
        unit = 1000, len = 3; /* µs, MICRO SIGN */
    } else if ((unsigned char)p[0] == 0xCE && (unsigned char)p[1] == 0xBC && p[2] == 's') {
        unit = 1000, len = 3; /* μs, GREEK SMALL LETTER MU */
    } else if (p[0] == 'n' && p[1] == 's') {
        unit = 1, len = 2;
    }
    *pp = p + len;
    return unit;
}

/* True when a further duration term starts at p. */
static bool term_starts(const char *p)
{
    return is_digit(*p) || (*p == '.' && is_digit(p[1]));
}

/* Reads one or more Go-style terms at *pp. Returns false when no complete
 * term is there. Advances *pp past what was read. */
static bool read_go_duration(const char **pp, int64_t *ns)
{
    const char *p = *pp;
    int64_t total = 0;
    int terms = 0;
    while (term_starts(p)) {
        decimal_t d;
        const char *q = p;
        if (!read_decimal(&q, &d))
            break;
        int64_t unit = read_unit(&q);
        if (unit == 0)
            return false;
        total = sat_add(total, decimal_to_ns(&d, unit));
        terms++;
        p = q;
    }
    if (terms == 0)
        return false;
    *pp = p;
    *ns = total;
    return true;
}

int ev_retryhint_gemini_delay(int64_t *ms, const char *s)
{
    *ms = -1;
    if (!s)
        return EV_EINVAL;
    const char *p = skip_blanks(s);
    decimal_t d;
    if (!read_decimal(&p, &d) || *p != 's')
        return EV_EPARSE;
    p = skip_blanks(p + 1);
    if (*p != '\0')
        return EV_EPARSE;
    *ms = ns_to_ms(decimal_to_ns(&d, INT64_C(1000000000)));
    return 0;
}

/* True when s (blanks already skipped) is an HTTP-date in one of the three
 * formats of RFC 9110 §5.6.7. */
static bool is_http_date(const char *s)
{
    static const char *const formats[] = {
        "%a, %d %b %Y %H:%M:%S GMT", /* IMF-fixdate */
        "%A, %d-%b-%y %H:%M:%S GMT", /* RFC 850 */
        "%a %b %e %H:%M:%S %Y",      /* asctime */
    };
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(s, formats[i], &tm);
        if (end && *skip_blanks(end) == '\0')
            return true;
    }
    return false;
}

int ev_retryhint_retry_after(int64_t *ms, const char *s)
{
    *ms = -1;
    if (!s)
        return EV_EINVAL;
    const char *p = skip_blanks(s);
    decimal_t d;
    if (read_decimal(&p, &d)) {
        if (*skip_blanks(p) != '\0')
            return EV_EPARSE;
        *ms = ns_to_ms(decimal_to_ns(&d, INT64_C(1000000000)));
        return 0;
    }
    /* An absolute date would need the wall clock and trusts the server's
     * clock; it is accepted as "no usable hint". */
    return is_http_date(p) ? 0 : EV_EPARSE;
}

int ev_retryhint_duration(int64_t *ms, const char *s)
{
    *ms = -1;
    if (!s)
        return EV_EINVAL;
    const char *p = skip_blanks(s);
    int64_t ns = 0;
    if (p[0] == '0' && *skip_blanks(p + 1) == '\0') {
        *ms = 0;
        return 0;
    }
    if (!read_go_duration(&p, &ns) || *skip_blanks(p) != '\0')
        return EV_EPARSE;
    *ms = ns_to_ms(ns);
    return 0;
}

/* Case-insensitive search for `needle` in `hay`. */
static const char *find_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++) {
        if (strncasecmp(p, needle, n) == 0)
            return p;
    }
    return NULL;
}

int ev_retryhint_from_message(int64_t *ms, const char *msg)
{
    *ms = -1;
    if (!msg)
        return EV_EINVAL;
    static const char *const phrases[] = {"retry in ", "try again in "};
    for (size_t i = 0; i < sizeof(phrases) / sizeof(phrases[0]); i++) {
        const char *p = msg;
        while ((p = find_ci(p, phrases[i])) != NULL) {
            const char *q = skip_blanks(p + strlen(phrases[i]));
            int64_t ns;
            if (read_go_duration(&q, &ns)) {
                *ms = ns_to_ms(ns);
                return 0;
            }
            p++;
        }
    }
    return EV_ENOTFOUND;
}
