/*
 * hostile_gen.c - writes one hostile or honest test file (tests/support/hostile.h)
 * for the fault scenarios, which run the real binary on files on disk.
 *
 *   hostile-gen honest|text-bomb|zero-bomb|string-bomb|nested|truncated OUT [N]
 *
 * N: pages (honest, default 3), MiB inflated (bombs, default 400) or depth
 * (nested, default 100000). Exit 0, or 2 on wrong usage, 1 when OUT cannot be
 * written.
 */
#include "hostile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: hostile-gen KIND OUT [N]\n");
        return 2;
    }
    long n = argc > 3 ? strtol(argv[3], NULL, 10) : 0;
    ev_hostile_params_t p = {.pages = n > 0 ? (int)n : 3,
                             .mib = n > 0 ? (size_t)n : 400,
                             .depth = n > 0 ? (size_t)n : 100000};
    static const struct {
        const char *name;
        ev_hostile_pdf_t kind;
    } kinds[] = {{"honest", EV_HOSTILE_HONEST},       {"text-bomb", EV_HOSTILE_TEXT_BOMB},
                 {"zero-bomb", EV_HOSTILE_ZERO_BOMB}, {"string-bomb", EV_HOSTILE_STRING_BOMB},
                 {"nested", EV_HOSTILE_NESTED},       {"truncated", EV_HOSTILE_TRUNCATED}};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strcmp(argv[1], kinds[i].name) != 0)
            continue;
        size_t len = 0;
        char *pdf = ev_hostile_pdf(kinds[i].kind, &p, &len);
        FILE *f = fopen(argv[2], "wb");
        int rc = f && fwrite(pdf, 1, len, f) == len ? 0 : 1;
        if (f && fclose(f) != 0)
            rc = 1;
        free(pdf);
        return rc;
    }
    fprintf(stderr, "hostile-gen: unknown kind '%s'\n", argv[1]);
    return 2;
}
