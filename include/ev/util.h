/*
 * util.h - small allocation and string helpers shared by every module.
 *
 * ev_malloc/ev_calloc/ev_realloc/ev_strdup abort on out-of-memory: they are for
 * small fixed allocations (redis zmalloc). Sizes that come from outside are
 * checked against their limit by the caller *before* allocating.
 * EV_ASSERT checks invariants in every build (redis serverAssert).
 */
#ifndef EV_UTIL_H
#define EV_UTIL_H

#include <stddef.h>
#include <stdint.h>

void *ev_malloc(size_t n);
void *ev_calloc(size_t count, size_t n);
void *ev_realloc(void *p, size_t n);
char *ev_strdup(const char *s);
char *ev_strndup(const char *s, size_t n);
/* Allocating printf; aborts on out-of-memory. Caller frees. */
char *ev_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* printf into a caller's one-line error buffer (err may be NULL or errlen 0:
 * then nothing is written). */
void ev_set_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void ev_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#define EV_ASSERT(e) ((e) ? (void)0 : ev_assert_fail(#e, __FILE__, __LINE__))

#define EV_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define EV_MIN(a, b) ((a) < (b) ? (a) : (b))
#define EV_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Thread-safe uniform random double in [0,1), per-thread xorshift seeded from
 * the time, thread and address entropy. */
double ev_rand01(void);
/* Uniform integer in [lo, hi] (inclusive); lo <= hi. */
int64_t ev_rand_range(int64_t lo, int64_t hi);

/* Fills buf with n bytes from the kernel's CSPRNG (getrandom): tokens and
 * webhook secrets. 0, or EV_EIO when the kernel cannot provide them. */
int ev_random_bytes(void *buf, size_t n);

#endif
