/*
 * fuzz_api_upload.c - libFuzzer target for the streamed multipart upload of
 * the API (ev_api_upload_*, include/ev/api_request.h): the sequence of field
 * chunks libmicrohttpd's post-processor hands over, as a hostile client
 * shapes it.
 *
 * Input: records of [field byte][flags byte][length byte][length bytes of
 * data]. The field byte picks the key (title, description, priority, pdf,
 * image, or an unknown one), the flags say whether the chunk starts a new
 * value (offset 0) and carry a filename; libmagic judges what the files are,
 * exactly as in the server. Limits are small (PDF 300 bytes, images 200, at
 * most 3 images) so the fuzzer reaches them.
 *
 * Checks: every refusal has a status of 400, 413, 422 or 500 with a code and
 * a message, and the first refusal stays; a finished upload has a 64-digit
 * request hash; storing renames every file; and whatever happened, freeing
 * the upload leaves the directory empty (a refused or abandoned upload keeps
 * nothing). Single-threaded; one private directory per process.
 */
#include "fuzz_common.h"

#include "ev/api_request.h"
#include "ev/error.h"

#include <dirent.h>
#include <unistd.h>

static char fuzz_dir[64];
static ev_files_t *fuzz_files;

static void fuzz_upload_cleanup(void)
{
    ev_files_free(fuzz_files);
    rmdir(fuzz_dir);
}

static int fuzz_dir_entries(void)
{
    int n = 0;
    DIR *d = opendir(fuzz_dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
    return n;
}

static int fuzz_api_upload(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"title", "description", "priority", "pdf",
                                       "image", "image",       "colour",   ""};
    ev_files_options_t fo = EV_FILES_OPTIONS_INIT;
    fo.pdf_max_bytes = 300;
    fo.image_max_bytes = 200;
    fo.max_images = 3;
    if (!fuzz_dir[0]) {
        snprintf(fuzz_dir, sizeof(fuzz_dir), "/tmp/ev-fuzz-upload-XXXXXX");
        if (!mkdtemp(fuzz_dir) || ev_files_new(&fuzz_files, &fo) != 0)
            abort();
        atexit(fuzz_upload_cleanup);
    }
    ev_api_upload_t *u = NULL;
    ev_api_upload_new(&u, fuzz_dir, "api/", &fo);
    uint64_t off[8] = {0};
    int first_status = 0;
    size_t i = 0;
    while (i + 3 <= size) {
        uint8_t k = data[i] & 7, flags = data[i + 1], len = data[i + 2];
        i += 3;
        if (len > size - i)
            len = (uint8_t)(size - i);
        if (flags & 1)
            off[k] = 0;
        int rc = ev_api_upload_field(u, keys[k], (flags & 2) ? "f\xc3(.png" : NULL,
                                     (const char *)data + i, off[k], len);
        off[k] += len;
        i += len;
        const ev_api_error_t *e = ev_api_upload_error(u);
        if (rc < 0) {
            FUZZ_CHECK(e->status == 400 || e->status == 413 || e->status == 422 ||
                       e->status == 500);
            FUZZ_CHECK(e->code[0] && e->message[0]);
            if (!first_status)
                first_status = e->status;
            FUZZ_CHECK(e->status == first_status);
        }
    }
    if (ev_api_upload_finish(u, fuzz_files) == 0) {
        FUZZ_CHECK(strlen(ev_api_upload_request_hash(u)) == 64);
        ev_queue_new_submission_t sub = {0};
        if (ev_api_upload_store(u, &sub) == 0) {
            FUZZ_CHECK(sub.title && sub.title[0]);
            FUZZ_CHECK(sub.nfiles == ev_api_upload_file_count(u));
            FUZZ_CHECK(fuzz_dir_entries() == (int)sub.nfiles);
        }
    } else {
        const ev_api_error_t *e = ev_api_upload_error(u);
        FUZZ_CHECK(e->status >= 400 && e->code[0] && e->message[0]);
    }
    ev_api_upload_free(u);
    FUZZ_CHECK(fuzz_dir_entries() == 0);
    return 0;
}

#ifndef EV_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_api_upload(data, size);
}
#endif
