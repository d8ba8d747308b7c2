/*
 * fuzz_image.c - libFuzzer target for the file-type verdict and the image
 * header reader (include/ev/imagehdr.h, ev_files_check_type and
 * ev_files_check_image in include/ev/files.h). The input is a file exactly
 * as uploaded (an exact-size heap copy, so ASan sees any read past its end).
 * Checked for any input and every accepted image type: the header reader
 * returns 0 with both dimensions > 0 or EV_EPARSE with both 0; the verdict
 * agrees with it (0, or EV_EPARSE / EV_ELIMIT with a non-empty reason that
 * is valid UTF-8 without control characters); every prefix of the input
 * is read without fault. Single-threaded.
 */
#include "fuzz_common.h"

#include "ev/error.h"
#include "ev/files.h"
#include "ev/imagehdr.h"
#include "ev/utf8.h"

static int clean_text(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = ev_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (l == 0 || cp < 0x20 || cp == 0x7f)
            return 0;
        i += l;
    }
    return n > 0;
}

static int fuzz_image(const uint8_t *data, size_t size)
{
    static const char *const mimes[] = {"image/png", "image/jpeg", "image/webp", "image/heic",
                                        "image/heif"};
    unsigned char *d = malloc(size ? size : 1);
    if (!d)
        abort();
    if (size)
        memcpy(d, data, size);
    ev_files_options_t o = EV_FILES_OPTIONS_INIT;
    for (size_t m = 0; m < sizeof(mimes) / sizeof(mimes[0]); m++) {
        uint32_t w = 7, h = 7;
        int rc = ev_imagehdr_size(d, size, mimes[m], &w, &h);
        FUZZ_CHECK(rc == 0 || rc == EV_EPARSE);
        FUZZ_CHECK(rc == 0 ? (w > 0 && h > 0) : (w == 0 && h == 0));
        char *why = NULL;
        int vrc = ev_files_check_image(&o, "upload\x01.png", mimes[m], d, size, &why);
        if (rc < 0) {
            FUZZ_CHECK(vrc == EV_EPARSE);
        } else {
            double mp = (double)w * (double)h / 1e6;
            FUZZ_CHECK(vrc == (mp > o.image_max_megapixels ? EV_ELIMIT : 0));
        }
        FUZZ_CHECK(vrc == 0 ? why == NULL : (why != NULL && clean_text(why)));
        free(why);
        /* Every prefix (a cut upload) is read without fault. */
        for (size_t cut = size > 64 ? size - 64 : 0; cut < size; cut += 16)
            (void)ev_imagehdr_size(d, cut, mimes[m], &w, &h);
    }
    char *why = NULL;
    int trc = ev_files_check_type(EV_FILE_IMAGE, (const char *)"x.png", "image/gif", size, &why);
    FUZZ_CHECK(trc == EV_ETYPE && why != NULL);
    free(why);
    free(d);
    return 0;
}

#ifndef EV_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_image(data, size);
}
#endif
