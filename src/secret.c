/*
 * secret.c - storage for API keys; see secret.h. Immutable after creation.
 */
#include "ev/secret.h"

#include "ev/error.h"
#include "ev/util.h"

#include <stdlib.h>
#include <string.h>

struct ev_secret {
    size_t len;
    char *value;
};

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

int ev_secret_new(ev_secret_t **out, const char *value)
{
    *out = NULL;
    size_t len = value ? strlen(value) : 0;
    while (len > 0 && (value[len - 1] == '\n' || value[len - 1] == '\r' || value[len - 1] == ' ' ||
                       value[len - 1] == '\t'))
        len--;
    if (len == 0)
        return EV_EINVAL;
    ev_secret_t *s = ev_calloc(1, sizeof(*s));
    s->value = ev_strndup(value, len);
    s->len = len;
    *out = s;
    return 0;
}

void ev_secret_free(ev_secret_t *s)
{
    if (!s)
        return;
    wipe(s->value, s->len);
    free(s->value);
    free(s);
}

char *ev_secret_header(const ev_secret_t *s, const char *prefix)
{
    size_t plen = strlen(prefix);
    char *h = ev_malloc(plen + s->len + 1);
    memcpy(h, prefix, plen);
    memcpy(h + plen, s->value, s->len);
    h[plen + s->len] = '\0';
    return h;
}

void ev_secret_header_free(char *header)
{
    if (!header)
        return;
    wipe(header, strlen(header));
    free(header);
}

bool ev_secret_appears_in(const ev_secret_t *s, const char *text, size_t len)
{
    if (!s || !text || len < s->len)
        return false;
    return memmem(text, len, s->value, s->len) != NULL;
}

bool ev_secret_equals(const ev_secret_t *s, const char *text, size_t len)
{
    if (!s || !text)
        return false;
    /* Every byte is compared whatever differs first, so the time taken says
     * nothing about how much of a guess was right. */
    unsigned char diff = (unsigned char)(len != s->len);
    for (size_t i = 0; i < s->len; i++)
        diff |= (unsigned char)(s->value[i] ^ (i < len ? text[i] : 0));
    return diff == 0;
}

size_t ev_secret_length(const ev_secret_t *s)
{
    return s ? s->len : 0;
}

const char *ev_secret_describe(const ev_secret_t *s)
{
    return s ? "set (hidden)" : "unset";
}
