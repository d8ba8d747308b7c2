/*
 * test_files.c - loading and classifying submission files.
 *
 * Every fixture kind gets its verdict and the exact reason a person reads;
 * storage paths that leave UPLOAD_DIR are refused with EV_EPATH and the
 * target is never opened (checked with inotify on the outside directory);
 * an oversized file is refused before it is read (a sparse 64 GiB file, with
 * inotify showing no read); every worker thread classifies with its own
 * libmagic handle, concurrently.
 *
 * Fixtures are byte arrays built here; the traversal tree is built at test
 * time in a fresh temporary directory and removed afterwards.
 */
#include "ev/error.h"
#include "ev/files.h"
#include "ev/hash.h"
#include "ev/util.h"

#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>
#include "hostile.h"
#include "runner.h"

/* ---- fixtures ----------------------------------------------------------------- */

static const char pdf_bytes[] = "%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
                                "2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
                                "trailer\n<< /Root 1 0 R >>\n%%EOF\n";

/* An empty ZIP archive: just the end-of-central-directory record. */
static const unsigned char zip_bytes[22] = {'P', 'K', 0x05, 0x06};

static const char html_bytes[] = "<!DOCTYPE html>\n<html><head><title>Submission</title></head>"
                                 "<body><p>Please see the attached file.</p></body></html>\n";

static const char text_bytes[] = "Dear organisers,\nhere is our submission for the event.\n";

/* A valid 1x1 greyscale PNG (IHDR, IDAT, IEND with correct CRCs). */
static const unsigned char png_bytes[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
    0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00,
    0x00, 0x3a, 0x7e, 0x9b, 0x55, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78,
    0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x48, 0xaf, 0xa4, 0x71, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

/* JPEG: SOI, a JFIF APP0 segment, EOI. */
static const unsigned char jpeg_bytes[] = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J',  'F',
                                           'I',  'F',  0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
                                           0x00, 0x01, 0x00, 0x00, 0xff, 0xd9};

/* A 1x1 GIF89a. */
static const unsigned char gif_bytes[] = {
    'G',  'I',  'F',  '8',  '9',  'a',  0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

/* A lossless WebP header (RIFF....WEBPVP8L) with a 1x1 bitstream. */
static const unsigned char webp_bytes[] = {'R',  'I',  'F',  'F',  0x1a, 0x00, 0x00, 0x00, 'W',
                                           'E',  'B',  'P',  'V',  'P',  '8',  'L',  0x0d, 0x00,
                                           0x00, 0x00, 0x2f, 0x00, 0x00, 0x00, 0x10, 0x07, 0x10,
                                           0x11, 0x11, 0x88, 0x88, 0xfe, 0x07, 0x00};

/* An ISO-BMFF 'ftyp' box with brand heic. */
static const unsigned char heic_bytes[] = {0x00, 0x00, 0x00, 0x18, 'f',  't',  'y',  'p',
                                           'h',  'e',  'i',  'c',  0x00, 0x00, 0x00, 0x00,
                                           'm',  'i',  'f',  '1',  'h',  'e',  'i',  'c'};

/* Bytes no magic rule claims. */
static const unsigned char binary_bytes[] = {0x00, 0x01, 0x02, 0xfe, 0x9c, 0x11, 0x00, 0x01, 0x02,
                                             0xfe, 0x9c, 0x11, 0x00, 0x01, 0x02, 0xfe, 0x9c, 0x11};

typedef struct fixture {
    const char *name;
    const void *data;
    size_t len;
    const char *mime;
} fixture_t;

#define FIX(n, arr, m)                                                                             \
    {                                                                                              \
        n, arr, sizeof(arr), m                                                                     \
    }
#define FIXS(n, str, m)                                                                            \
    {                                                                                              \
        n, str, sizeof(str) - 1, m                                                                 \
    }

static const fixture_t fixtures[] = {
    FIXS("pdf", pdf_bytes, "application/pdf"),
    FIX("zip", zip_bytes, "application/zip"),
    FIXS("html", html_bytes, "text/html"),
    FIXS("text", text_bytes, "text/plain"),
    FIX("png", png_bytes, "image/png"),
    FIX("jpeg", jpeg_bytes, "image/jpeg"),
    FIX("gif", gif_bytes, "image/gif"),
    FIX("webp", webp_bytes, "image/webp"),
    FIX("heic", heic_bytes, "image/heic"),
    FIX("binary", binary_bytes, "application/octet-stream"),
    {"empty", "", 0, "inode/x-empty"},
};

static const fixture_t *fixture(const char *name)
{
    for (size_t i = 0; i < EV_ARRAY_LEN(fixtures); i++)
        if (strcmp(fixtures[i].name, name) == 0)
            return &fixtures[i];
    CU_FAIL_FATAL("no such fixture");
    return NULL;
}

static const ev_files_options_t default_opts = EV_FILES_OPTIONS_INIT;

static void expect_reason(int rc, int want_rc, char *reason, const char *want)
{
    CU_ASSERT_EQUAL(rc, want_rc);
    if (want == NULL) {
        CU_ASSERT_PTR_NULL(reason);
    } else {
        CU_ASSERT_PTR_NOT_NULL(reason);
        if (reason && strcmp(reason, want) != 0)
            fprintf(stderr, "\n  reason: got \"%s\"\n     expected \"%s\"\n", reason, want);
        CU_ASSERT(reason && strcmp(reason, want) == 0);
    }
    free(reason);
}

/* Runs `call` (which writes a reason through &reason) and checks both. */
#define EXPECT_REASON(want_rc, want, call)                                                         \
    do {                                                                                           \
        char *reason = (char *)"unset";                                                            \
        int rc_ = (call);                                                                          \
        expect_reason(rc_, want_rc, reason, want);                                                 \
    } while (0)

/* ---- classification and verdicts ------------------------------------------------ */

static void test_classify_every_fixture(void)
{
    ev_files_t *f = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_files_new(&f, &default_opts), 0);
    for (size_t i = 0; i < EV_ARRAY_LEN(fixtures); i++) {
        char mime[EV_FILES_MIME_MAX];
        CU_ASSERT_EQUAL(ev_files_classify(f, mime, sizeof(mime), fixtures[i].data, fixtures[i].len),
                        0);
        if (strcmp(mime, fixtures[i].mime) != 0)
            fprintf(stderr, "\n  %s: got %s, expected %s\n", fixtures[i].name, mime,
                    fixtures[i].mime);
        CU_ASSERT_STRING_EQUAL(mime, fixtures[i].mime);
    }
    ev_files_free(f);
    ev_files_free(NULL);
}

static void check_type_of(ev_file_kind_t kind, const char *filename, const char *fixture_name,
                          int want_rc, const char *want_reason)
{
    const fixture_t *fx = fixture(fixture_name);
    char *reason = (char *)"unset";
    int rc = ev_files_check_type(kind, filename, fx->mime, fx->len, &reason);
    expect_reason(rc, want_rc, reason, want_reason);
}

static void test_declared_pdf_verdicts(void)
{
    check_type_of(EV_FILE_PDF, "a.pdf", "pdf", 0, NULL);
    check_type_of(EV_FILE_PDF, "a.pdf", "zip", EV_ETYPE, "declared PDF is a ZIP archive");
    check_type_of(EV_FILE_PDF, "a.pdf", "html", EV_ETYPE, "declared PDF is an HTML document");
    check_type_of(EV_FILE_PDF, "a.pdf", "png", EV_ETYPE, "declared PDF is a PNG image");
    check_type_of(EV_FILE_PDF, "a.pdf", "jpeg", EV_ETYPE, "declared PDF is a JPEG image");
    check_type_of(EV_FILE_PDF, "a.pdf", "gif", EV_ETYPE, "declared PDF is a GIF image");
    check_type_of(EV_FILE_PDF, "a.pdf", "text", EV_ETYPE, "declared PDF is plain text");
    check_type_of(EV_FILE_PDF, "a.pdf", "binary", EV_ETYPE,
                  "declared PDF is unrecognised binary data");
    check_type_of(EV_FILE_PDF, "a.pdf", "empty", EV_ETYPE, "declared PDF is empty");

    EXPECT_REASON(EV_ETYPE, "declared PDF is a file of type application/x-frobnicate",
                  ev_files_check_type(EV_FILE_PDF, NULL, "application/x-frobnicate", 10, &reason));
}

static void test_image_verdicts(void)
{
    check_type_of(EV_FILE_IMAGE, "a.png", "png", 0, NULL);
    check_type_of(EV_FILE_IMAGE, "a.jpg", "jpeg", 0, NULL);
    check_type_of(EV_FILE_IMAGE, "a.webp", "webp", 0, NULL);
    check_type_of(EV_FILE_IMAGE, "a.heic", "heic", 0, NULL);
    EXPECT_REASON(0, NULL, ev_files_check_type(EV_FILE_IMAGE, "a.heif", "image/heif", 10, &reason));

    check_type_of(EV_FILE_IMAGE, "x.png", "pdf", EV_ETYPE,
                  "image 'x.png' is a PDF document, not an image");
    check_type_of(EV_FILE_IMAGE, "x.png", "zip", EV_ETYPE,
                  "image 'x.png' is a ZIP archive, not an image");
    check_type_of(EV_FILE_IMAGE, "x.png", "html", EV_ETYPE,
                  "image 'x.png' is an HTML document, not an image");
    check_type_of(EV_FILE_IMAGE, "x.png", "empty", EV_ETYPE, "image 'x.png' is empty");
    check_type_of(EV_FILE_IMAGE, NULL, "gif", EV_ETYPE,
                  "image type image/gif is not accepted (png, jpeg, webp, heic, heif)");
    check_type_of(EV_FILE_IMAGE, "x.gif", "gif", EV_ETYPE,
                  "image 'x.gif': type image/gif is not accepted (png, jpeg, webp, heic, heif)");
    check_type_of(EV_FILE_IMAGE, NULL, "binary", EV_ETYPE,
                  "image is unrecognised binary data, not an image");
}

static void test_filenames_in_reasons_are_sanitised(void)
{
    /* Control characters and invalid UTF-8 never reach a reason; long names
     * are shortened. */
    char *reason = NULL;
    int rc = ev_files_check_type(EV_FILE_IMAGE, "evil\n\x1b[31m\xff.png", "application/pdf", 10,
                                 &reason);
    expect_reason(rc, EV_ETYPE, reason, "image 'evil??[31m?.png' is a PDF document, not an image");

    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    rc = ev_files_check_type(EV_FILE_IMAGE, longname, "application/pdf", 10, &reason);
    CU_ASSERT_EQUAL(rc, EV_ETYPE);
    CU_ASSERT_PTR_NOT_NULL_FATAL(reason);
    CU_ASSERT(strlen(reason) < 140);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "aaa...' is a PDF document"));
    free(reason);

    /* Multi-byte characters are kept whole. */
    rc = ev_files_check_type(EV_FILE_IMAGE, "caf\xc3\xa9.png", "application/pdf", 10, &reason);
    expect_reason(rc, EV_ETYPE, reason, "image 'caf\xc3\xa9.png' is a PDF document, not an image");
}

static void test_size_limits(void)
{
    ev_files_options_t o = default_opts;

    EXPECT_REASON(EV_ETOOBIG, "image is 5.2 MiB, limit is 4 MiB",
                  ev_files_check_size(&o, EV_FILE_IMAGE, NULL, 5452595, &reason));
    EXPECT_REASON(EV_ETOOBIG, "image 'big.png' is 5.2 MiB, limit is 4 MiB",
                  ev_files_check_size(&o, EV_FILE_IMAGE, "big.png", 5452595, &reason));
    EXPECT_REASON(EV_ETOOBIG, "PDF is 15.0 MiB, limit is 14 MiB",
                  ev_files_check_size(&o, EV_FILE_PDF, "a.pdf", 15 * EV_FILES_MIB, &reason));
    /* At the limit is fine; one byte over is refused and says why. */
    EXPECT_REASON(0, NULL, ev_files_check_size(&o, EV_FILE_IMAGE, NULL, 4 * EV_FILES_MIB, &reason));
    EXPECT_REASON(EV_ETOOBIG, "image is 4.0 MiB (4194305 bytes), limit is 4 MiB (4194304 bytes)",
                  ev_files_check_size(&o, EV_FILE_IMAGE, NULL, 4 * EV_FILES_MIB + 1, &reason));
    o.image_max_bytes = 1500 * 1024;
    EXPECT_REASON(EV_ETOOBIG, "image is 2.0 MiB, limit is 1.5 MiB",
                  ev_files_check_size(&o, EV_FILE_IMAGE, NULL, 2 * EV_FILES_MIB, &reason));
}

static void test_image_count(void)
{
    EXPECT_REASON(EV_ELIMIT, "7 images, limit is 5",
                  ev_files_check_count(&default_opts, 7, &reason));
    EXPECT_REASON(0, NULL, ev_files_check_count(&default_opts, 5, &reason));
    EXPECT_REASON(0, NULL, ev_files_check_count(&default_opts, 0, &reason));
    ev_files_options_t o = default_opts;
    o.max_images = 0;
    EXPECT_REASON(EV_ELIMIT, "1 image, limit is 0", ev_files_check_count(&o, 1, &reason));
}

static void test_format_size(void)
{
    static const struct {
        int64_t bytes;
        bool exact;
        const char *want;
    } cases[] = {
        {0, false, "0 bytes"},
        {1, false, "1 byte"},
        {1023, true, "1023 bytes"},
        {1024, true, "1 KiB"},
        {1024, false, "1.0 KiB"},
        {1536, true, "1.5 KiB"},
        {14 * EV_FILES_MIB, true, "14 MiB"},
        {15 * EV_FILES_MIB, false, "15.0 MiB"},
        {(int64_t)64 << 30, false, "64.0 GiB"},
        {(int64_t)3 << 40, true, "3 TiB"},
    };
    for (size_t i = 0; i < EV_ARRAY_LEN(cases); i++) {
        char buf[48];
        ev_files_format_size(buf, sizeof(buf), cases[i].bytes, cases[i].exact);
        CU_ASSERT_STRING_EQUAL(buf, cases[i].want);
    }
}

static void test_friendly_mime_names(void)
{
    CU_ASSERT_STRING_EQUAL(ev_files_describe_mime("application/zip"), "a ZIP archive");
    CU_ASSERT_STRING_EQUAL(ev_files_describe_mime("text/html"), "an HTML document");
    CU_ASSERT_STRING_EQUAL(ev_files_describe_mime("text/plain"), "plain text");
    CU_ASSERT_STRING_EQUAL(ev_files_describe_mime("image/gif"), "a GIF image");
    CU_ASSERT_STRING_EQUAL(ev_files_describe_mime("image/png"), "a PNG image");
    CU_ASSERT_STRING_EQUAL(ev_files_describe_mime("image/jpeg"), "a JPEG image");
    CU_ASSERT_STRING_EQUAL(ev_files_describe_mime("application/octet-stream"),
                           "unrecognised binary data");
    CU_ASSERT_STRING_EQUAL(ev_files_describe_mime("application/pdf"), "a PDF document");
    CU_ASSERT_STRING_EQUAL(ev_files_describe_mime("video/mp4"), "a video");
    CU_ASSERT_PTR_NULL(ev_files_describe_mime("application/x-frobnicate"));
    CU_ASSERT_PTR_NULL(ev_files_describe_mime(NULL));

    CU_ASSERT_TRUE(ev_files_image_mime_accepted("image/heif"));
    CU_ASSERT_FALSE(ev_files_image_mime_accepted("image/gif"));
    CU_ASSERT_FALSE(ev_files_image_mime_accepted("image/svg+xml"));
    CU_ASSERT_FALSE(ev_files_image_mime_accepted(NULL));

    ev_file_kind_t k;
    CU_ASSERT_EQUAL(ev_files_kind_parse(&k, "pdf"), 0);
    CU_ASSERT_EQUAL(k, EV_FILE_PDF);
    CU_ASSERT_EQUAL(ev_files_kind_parse(&k, "image"), 0);
    CU_ASSERT_EQUAL(k, EV_FILE_IMAGE);
    CU_ASSERT_EQUAL(ev_files_kind_parse(&k, "PDF"), EV_EINVAL);
    CU_ASSERT_STRING_EQUAL(ev_files_kind_name(EV_FILE_IMAGE), "image");
}

/* ---- loading from content --------------------------------------------------------- */

static void test_load_content(void)
{
    ev_files_t *f = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_files_new(&f, &default_opts), 0);
    ev_files_item_t *it = NULL;
    char *why = (char *)"unset";

    /* A real PNG passes; the item borrows the bytes and knows their hash. */
    ev_files_source_t src = {.kind = EV_FILE_IMAGE,
                             .filename = "logo.png",
                             .content = png_bytes,
                             .content_len = sizeof(png_bytes)};
    CU_ASSERT_EQUAL_FATAL(ev_files_load(f, &it, &src, &why), 0);
    CU_ASSERT_PTR_NULL(why);
    size_t len = 0;
    CU_ASSERT_PTR_EQUAL(ev_files_item_data(it, &len), png_bytes);
    CU_ASSERT_EQUAL(len, sizeof(png_bytes));
    CU_ASSERT_STRING_EQUAL(ev_files_item_mime(it), "image/png");
    CU_ASSERT_STRING_EQUAL(ev_files_item_filename(it), "logo.png");
    CU_ASSERT_EQUAL(ev_files_item_kind(it), EV_FILE_IMAGE);
    char hex[EV_HASH_SHA256_HEX_LEN];
    ev_hash_sha256_hex(hex, png_bytes, sizeof(png_bytes));
    CU_ASSERT_STRING_EQUAL(ev_files_item_sha256(it), hex);
    ev_files_item_free(it);

    /* The declared kind and the filename do not matter, the bytes do. */
    src = (ev_files_source_t){.kind = EV_FILE_PDF,
                              .filename = "report.pdf",
                              .content = zip_bytes,
                              .content_len = sizeof(zip_bytes)};
    EXPECT_REASON(EV_ETYPE, "declared PDF is a ZIP archive", ev_files_load(f, &it, &src, &reason));
    CU_ASSERT_PTR_NULL(it);
    src = (ev_files_source_t){.kind = EV_FILE_PDF,
                              .filename = "report.pdf",
                              .content = html_bytes,
                              .content_len = sizeof(html_bytes) - 1};
    EXPECT_REASON(EV_ETYPE, "declared PDF is an HTML document",
                  ev_files_load(f, &it, &src, &reason));
    src = (ev_files_source_t){.kind = EV_FILE_IMAGE,
                              .filename = "x.png",
                              .content = pdf_bytes,
                              .content_len = sizeof(pdf_bytes) - 1};
    EXPECT_REASON(EV_ETYPE, "image 'x.png' is a PDF document, not an image",
                  ev_files_load(f, &it, &src, &reason));
    src = (ev_files_source_t){.kind = EV_FILE_IMAGE,
                              .filename = "anim.gif",
                              .content = gif_bytes,
                              .content_len = sizeof(gif_bytes)};
    EXPECT_REASON(EV_ETYPE,
                  "image 'anim.gif': type image/gif is not accepted (png, jpeg, webp, heic, heif)",
                  ev_files_load(f, &it, &src, &reason));
    src = (ev_files_source_t){
        .kind = EV_FILE_PDF, .filename = "a.pdf", .content = "", .content_len = 0};
    EXPECT_REASON(EV_ETYPE, "declared PDF is empty", ev_files_load(f, &it, &src, &reason));

    /* Size is judged before the type. */
    ev_files_free(f);
    ev_files_options_t small = default_opts;
    small.image_max_bytes = 16;
    CU_ASSERT_EQUAL_FATAL(ev_files_new(&f, &small), 0);
    src = (ev_files_source_t){.kind = EV_FILE_IMAGE,
                              .filename = "logo.png",
                              .content = png_bytes,
                              .content_len = sizeof(png_bytes)};
    EXPECT_REASON(EV_ETOOBIG, "image 'logo.png' is 67 bytes, limit is 16 bytes",
                  ev_files_load(f, &it, &src, &reason));

    /* A broken row: neither or both sources. */
    src = (ev_files_source_t){.kind = EV_FILE_IMAGE, .filename = "a.png"};
    EXPECT_REASON(EV_EINVAL, "image 'a.png' has neither content nor a storage path",
                  ev_files_load(f, &it, &src, &reason));
    src = (ev_files_source_t){.kind = EV_FILE_PDF,
                              .filename = "a.pdf",
                              .content = pdf_bytes,
                              .content_len = 4,
                              .storage_path = "a.pdf"};
    EXPECT_REASON(EV_EINVAL, "PDF 'a.pdf' has both content and a storage path",
                  ev_files_load(f, &it, &src, &reason));
    ev_files_free(f);
}

/* ---- storage paths ------------------------------------------------------------------ */

typedef struct tree {
    char root[64];         /* temp dir */
    char upload[PATH_MAX]; /* root/upload = UPLOAD_DIR */
    char secret[PATH_MAX]; /* root/secret, outside, watched */
} tree_t;

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char *p = ev_asprintf("%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, data, len) == (ssize_t)len);
    close(fd);
    free(p);
}

static void make_link(const char *target, const char *dir, const char *name)
{
    char *p = ev_asprintf("%s/%s", dir, name);
    CU_ASSERT_FATAL(symlink(target, p) == 0);
    free(p);
}

static void tree_build(tree_t *t)
{
    snprintf(t->root, sizeof(t->root), "%s", "/tmp/ev-test-files-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(t->root) != NULL);
    snprintf(t->upload, sizeof(t->upload), "%s/upload", t->root);
    snprintf(t->secret, sizeof(t->secret), "%s/secret", t->root);
    CU_ASSERT_FATAL(mkdir(t->upload, 0755) == 0);
    CU_ASSERT_FATAL(mkdir(t->secret, 0755) == 0);
    char *sub = ev_asprintf("%s/sub", t->upload);
    CU_ASSERT_FATAL(mkdir(sub, 0755) == 0);
    char *adir = ev_asprintf("%s/adir", t->upload);
    CU_ASSERT_FATAL(mkdir(adir, 0755) == 0);

    write_file(t->secret, "passwd", "root:x:0:0\n", 11);
    write_file(t->upload, "ok.pdf", pdf_bytes, sizeof(pdf_bytes) - 1);
    write_file(sub, "ok.png", png_bytes, sizeof(png_bytes));
    write_file(t->upload, "x.png", pdf_bytes, sizeof(pdf_bytes) - 1);

    char *abs_secret = ev_asprintf("%s/passwd", t->secret);
    make_link("ok.pdf", t->upload, "link-in.pdf");        /* inside -> inside: allowed */
    make_link("sub/ok.png", t->upload, "link-in.png");    /* inside -> inside: allowed */
    make_link("../secret/passwd", t->upload, "link-out"); /* relative, escapes */
    make_link(abs_secret, t->upload, "link-abs");         /* absolute, escapes */
    make_link("../secret", t->upload, "subout");          /* directory component escapes */
    make_link("../../secret/passwd", sub, "link-up");     /* deeper, escapes */
    make_link("/proc/self/root/etc/passwd", t->upload, "link-proc"); /* via a magic link */
    free(abs_secret);

    char *fifo = ev_asprintf("%s/pipe", t->upload);
    CU_ASSERT_FATAL(mkfifo(fifo, 0644) == 0);
    free(fifo);

    /* 64 GiB that occupies no disk: refused by size, never read. */
    char *huge = ev_asprintf("%s/huge.pdf", t->upload);
    int fd = open(huge, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(ftruncate(fd, (off_t)64 << 30) == 0);
    close(fd);
    free(huge);
    free(adir);
    free(sub);
}

static void rm(const char *dir, const char *name)
{
    char *p = ev_asprintf("%s/%s", dir, name);
    CU_ASSERT(unlink(p) == 0);
    free(p);
}

static void tree_destroy(tree_t *t)
{
    char *sub = ev_asprintf("%s/sub", t->upload);
    char *adir = ev_asprintf("%s/adir", t->upload);
    rm(sub, "ok.png");
    rm(sub, "link-up");
    static const char *const names[] = {"ok.pdf",   "x.png",    "link-in.pdf", "link-in.png",
                                        "link-out", "link-abs", "subout",      "link-proc",
                                        "pipe",     "huge.pdf"};
    for (size_t i = 0; i < EV_ARRAY_LEN(names); i++)
        rm(t->upload, names[i]);
    rm(t->secret, "passwd");
    CU_ASSERT(rmdir(sub) == 0);
    CU_ASSERT(rmdir(adir) == 0);
    CU_ASSERT(rmdir(t->upload) == 0);
    CU_ASSERT(rmdir(t->secret) == 0);
    CU_ASSERT(rmdir(t->root) == 0);
    free(adir);
    free(sub);
}

/* Number of queued inotify events (the descriptor is non-blocking). */
static int drain_events(int ifd)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int count = 0;
    for (;;) {
        ssize_t n = read(ifd, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            count++;
            p += sizeof(*ev) + ev->len;
        }
    }
    return count;
}

static void expect_read(ev_files_t *f, const char *path, size_t path_len, int64_t max, int want_rc,
                        const char *want_reason)
{
    unsigned char *data = (unsigned char *)0x1;
    size_t len = 99;
    char *reason = (char *)"unset";
    int rc = ev_files_read_path(f, &data, &len, path, path_len, max, &reason);
    if (rc != want_rc)
        fprintf(stderr, "\n  path '%s': got %s, expected %s\n", path, ev_errname(rc),
                ev_errname(want_rc));
    expect_reason(rc, want_rc, reason, want_reason);
    if (want_rc < 0) {
        CU_ASSERT_PTR_NULL(data);
        CU_ASSERT_EQUAL(len, 0);
    }
    free(data);
}

static void run_traversal_cases(bool fallback)
{
    tree_t t;
    tree_build(&t);

    /* Watch the outside directory and its file: nothing may open or read them. */
    int ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    CU_ASSERT_FATAL(ifd >= 0);
    char *secret_file = ev_asprintf("%s/passwd", t.secret);
    CU_ASSERT_FATAL(inotify_add_watch(ifd, t.secret, IN_OPEN | IN_ACCESS) >= 0);
    CU_ASSERT_FATAL(inotify_add_watch(ifd, secret_file, IN_OPEN | IN_ACCESS) >= 0);
    /* Nor may the FIFO, the directory or the oversized file be opened (the
     * checks look at them through O_PATH descriptors, which open nothing). */
    char *huge = ev_asprintf("%s/huge.pdf", t.upload);
    char *pipe_path = ev_asprintf("%s/pipe", t.upload);
    char *adir = ev_asprintf("%s/adir", t.upload);
    CU_ASSERT_FATAL(inotify_add_watch(ifd, huge, IN_OPEN | IN_ACCESS) >= 0);
    CU_ASSERT_FATAL(inotify_add_watch(ifd, pipe_path, IN_OPEN | IN_ACCESS) >= 0);
    CU_ASSERT_FATAL(inotify_add_watch(ifd, adir, IN_OPEN | IN_ACCESS | IN_ONLYDIR) >= 0);

    ev_files_options_t o = default_opts;
    o.upload_dir = t.upload;
    o.force_path_fallback = fallback;
    ev_files_t *f = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_files_new(&f, &o), 0);
    const int64_t max = 14 * EV_FILES_MIB;

    /* Lexically refused. */
    expect_read(f, "../secret/passwd", 16, max, EV_EPATH,
                "storage path '../secret/passwd' refused: it contains a '..' component");
    expect_read(f, "sub/../ok.pdf", 13, max, EV_EPATH,
                "storage path 'sub/../ok.pdf' refused: it contains a '..' component");
    expect_read(f, "..", 2, max, EV_EPATH,
                "storage path '..' refused: it contains a '..' component");
    char *want_abs =
        ev_asprintf("storage path '%s' refused: absolute paths are not allowed", secret_file);
    expect_read(f, secret_file, strlen(secret_file), max, EV_EPATH, want_abs);
    free(want_abs);
    expect_read(f, "", 0, max, EV_EPATH, "storage path '' refused: the path is empty");
    expect_read(f, "ok.pdf\0../../x", 14, max, EV_EPATH,
                "storage path 'ok.pdf?../../x' refused: it contains a NUL byte");

    /* Resolved outside: symlinks, absolute or relative, at any component. */
    const char *outside = "it resolves outside the upload directory";
    static const char *const escaping[] = {"link-out", "link-abs", "subout/passwd", "sub/link-up"};
    for (size_t i = 0; i < EV_ARRAY_LEN(escaping); i++) {
        char *want = ev_asprintf("storage path '%s' refused: %s", escaping[i], outside);
        expect_read(f, escaping[i], strlen(escaping[i]), max, EV_EPATH, want);
        free(want);
    }
    /* A magic link is refused one way or another, never followed. */
    {
        unsigned char *data = NULL;
        size_t len = 0;
        char *reason = NULL;
        CU_ASSERT_EQUAL(ev_files_read_path(f, &data, &len, "link-proc", 9, max, &reason), EV_EPATH);
        CU_ASSERT_PTR_NULL(data);
        free(reason);
    }

    /* Not regular files: refused without blocking on the FIFO. */
    expect_read(f, "adir", 4, max, EV_EPATH,
                "storage path 'adir' refused: it is a directory, not a regular file");
    expect_read(f, "pipe", 4, max, EV_EPATH,
                "storage path 'pipe' refused: it is not a regular file");
    expect_read(f, "missing.pdf", 11, max, EV_ENOTFOUND,
                "storage path 'missing.pdf' not found in the upload directory");
    expect_read(f, "huge.pdf", 8, max, EV_ETOOBIG,
                "storage path 'huge.pdf' is 64.0 GiB, limit is 14 MiB");

    /* Allowed: plain files and symlinks that stay inside. */
    static const struct {
        const char *path;
        const void *bytes;
        size_t len;
    } good[] = {
        {"ok.pdf", pdf_bytes, sizeof(pdf_bytes) - 1},
        {"./ok.pdf", pdf_bytes, sizeof(pdf_bytes) - 1},
        {"sub/ok.png", png_bytes, sizeof(png_bytes)},
        {"link-in.pdf", pdf_bytes, sizeof(pdf_bytes) - 1},
        {"link-in.png", png_bytes, sizeof(png_bytes)},
    };
    for (size_t i = 0; i < EV_ARRAY_LEN(good); i++) {
        unsigned char *data = NULL;
        size_t len = 0;
        char *reason = (char *)"unset";
        CU_ASSERT_EQUAL(
            ev_files_read_path(f, &data, &len, good[i].path, strlen(good[i].path), max, &reason),
            0);
        CU_ASSERT_PTR_NULL(reason);
        CU_ASSERT_EQUAL(len, good[i].len);
        CU_ASSERT(data && memcmp(data, good[i].bytes, len) == 0 && data[len] == '\0');
        free(data);
    }
    /* A limit below the file's size refuses it, exactly at the size reads it. */
    expect_read(f, "sub/ok.png", 10, (int64_t)sizeof(png_bytes) - 1, EV_ETOOBIG,
                "storage path 'sub/ok.png' is 67 bytes, limit is 66 bytes");
    expect_read(f, "sub/ok.png", 10, (int64_t)sizeof(png_bytes), 0, NULL);

    /* Through ev_files_load: the same refusals become verdicts. */
    ev_files_item_t *it = NULL;
    ev_files_source_t src = {
        .kind = EV_FILE_PDF, .filename = "big.pdf", .storage_path = "huge.pdf"};
    EXPECT_REASON(EV_ETOOBIG, "PDF is 64.0 GiB, limit is 14 MiB",
                  ev_files_load(f, &it, &src, &reason));
    src = (ev_files_source_t){.kind = EV_FILE_IMAGE, .filename = "x.png", .storage_path = "x.png"};
    EXPECT_REASON(EV_ETYPE, "image 'x.png' is a PDF document, not an image",
                  ev_files_load(f, &it, &src, &reason));
    src =
        (ev_files_source_t){.kind = EV_FILE_IMAGE, .filename = "p.png", .storage_path = "link-out"};
    EXPECT_REASON(EV_EPATH,
                  "storage path 'link-out' refused: it resolves outside the upload directory",
                  ev_files_load(f, &it, &src, &reason));
    src = (ev_files_source_t){.kind = EV_FILE_IMAGE,
                              .filename = "p.png",
                              .storage_path = "ok.png\0/x",
                              .storage_path_len = 9};
    EXPECT_REASON(EV_EPATH, "storage path 'ok.png?/x' refused: it contains a NUL byte",
                  ev_files_load(f, &it, &src, &reason));
    src = (ev_files_source_t){
        .kind = EV_FILE_IMAGE, .filename = "logo.png", .storage_path = "link-in.png"};
    char *why = (char *)"unset";
    CU_ASSERT_EQUAL_FATAL(ev_files_load(f, &it, &src, &why), 0);
    CU_ASSERT_PTR_NULL(why);
    size_t len = 0;
    const unsigned char *bytes = ev_files_item_data(it, &len);
    CU_ASSERT(len == sizeof(png_bytes) && memcmp(bytes, png_bytes, len) == 0);
    CU_ASSERT_STRING_EQUAL(ev_files_item_mime(it), "image/png");
    char hex[EV_HASH_SHA256_HEX_LEN];
    ev_hash_sha256_hex(hex, png_bytes, sizeof(png_bytes));
    CU_ASSERT_STRING_EQUAL(ev_files_item_sha256(it), hex);
    ev_files_item_free(it);

    /* The proof: nothing outside was opened or read, and the FIFO, the
     * directory and the oversized file were never opened. Then show the
     * watch works by opening a watched file ourselves. */
    CU_ASSERT_EQUAL(drain_events(ifd), 0);
    int fd = open(secret_file, O_RDONLY | O_CLOEXEC);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    CU_ASSERT(drain_events(ifd) > 0);

    ev_files_free(f);
    close(ifd);
    free(adir);
    free(pipe_path);
    free(huge);
    free(secret_file);
    tree_destroy(&t);
}

static void test_traversal_openat2(void)
{
    run_traversal_cases(false);
}

static void test_traversal_realpath_fallback(void)
{
    run_traversal_cases(true);
}

static void test_paths_refused_without_upload_dir(void)
{
    ev_files_t *f = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_files_new(&f, &default_opts), 0);
    expect_read(f, "ok.pdf", 6, 1024, EV_EPATH,
                "storage path 'ok.pdf' refused: UPLOAD_DIR is not configured");
    ev_files_item_t *it = NULL;
    ev_files_source_t src = {.kind = EV_FILE_PDF, .filename = "a.pdf", .storage_path = "ok.pdf"};
    EXPECT_REASON(EV_EPATH, "storage path 'ok.pdf' refused: UPLOAD_DIR is not configured",
                  ev_files_load(f, &it, &src, &reason));
    CU_ASSERT_PTR_NULL(it);
    ev_files_free(f);
}

/* ---- options from the configuration ------------------------------------------------ */

static const char *cfg_lookup(const char *name, void *ctx)
{
    const char *const *kv = ctx;
    for (; kv[0]; kv += 2)
        if (strcmp(kv[0], name) == 0)
            return kv[1];
    return NULL;
}

static void test_options_from_config(void)
{
    char dir[] = "/tmp/ev-test-files-cfg-XXXXXX";
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    const char *env[] = {"UPLOAD_DIR",      dir,    "PDF_MAX_PAGES", "7",     "MAX_IMAGES", "3",
                         "IMAGE_MAX_BYTES", "2MiB", "PDF_MAX_BYTES", "10MiB", NULL};
    ev_config_t *cfg = NULL;
    char err[256] = "";
    int rc = ev_config_load(&cfg, cfg_lookup, (void *)env, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "\n  config: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);

    ev_files_options_t o;
    ev_files_options_from_config(&o, cfg);
    CU_ASSERT_EQUAL(o.pdf_max_pages, 7);
    CU_ASSERT_EQUAL(o.max_images, 3);
    CU_ASSERT_EQUAL(o.image_max_bytes, 2 * EV_FILES_MIB);
    CU_ASSERT_EQUAL(o.pdf_max_bytes, 10 * EV_FILES_MIB);
    CU_ASSERT_FALSE(o.force_path_fallback);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o.upload_dir);

    /* The object keeps its own copy: the config may go away. */
    ev_files_t *f = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_files_new(&f, &o), 0);
    char *want = ev_strdup(o.upload_dir);
    ev_config_free(cfg);
    CU_ASSERT_STRING_EQUAL(ev_files_options(f)->upload_dir, want);
    EXPECT_REASON(EV_ELIMIT, "4 images, limit is 3",
                  ev_files_check_count(ev_files_options(f), 4, &reason));
    free(want);
    ev_files_free(f);
    CU_ASSERT(rmdir(dir) == 0);
}

/* ---- one libmagic handle per thread ------------------------------------------------ */

#define THREADS 4
#define ROUNDS 150

typedef struct worker {
    pthread_t th;
    size_t index;
    int created; /* ev_files_new succeeded on this thread */
    int correct; /* classifications that matched */
    int attempted;
} worker_t;

static void *classify_worker(void *p)
{
    worker_t *w = p;
    ev_files_t *f = NULL;
    /* Each worker creates, uses and frees its own handle on its own thread. */
    if (ev_files_new(&f, &default_opts) != 0)
        return NULL;
    w->created = 1;
    for (int r = 0; r < ROUNDS; r++) {
        for (size_t i = 0; i < EV_ARRAY_LEN(fixtures); i++) {
            /* Start at a different fixture per thread and round so threads
             * classify different things at the same moment. */
            const fixture_t *fx = &fixtures[(i + (size_t)r + w->index) % EV_ARRAY_LEN(fixtures)];
            char mime[EV_FILES_MIME_MAX];
            w->attempted++;
            if (ev_files_classify(f, mime, sizeof(mime), fx->data, fx->len) == 0 &&
                strcmp(mime, fx->mime) == 0)
                w->correct++;
        }
    }
    ev_files_free(f);
    return NULL;
}

static void test_magic_handle_per_thread(void)
{
    worker_t w[THREADS];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < THREADS; i++) {
        w[i].index = (size_t)i;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&w[i].th, NULL, classify_worker, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(w[i].th, NULL);
        CU_ASSERT_EQUAL(w[i].created, 1);
        CU_ASSERT_EQUAL(w[i].attempted, ROUNDS * (int)EV_ARRAY_LEN(fixtures));
        CU_ASSERT_EQUAL(w[i].correct, w[i].attempted);
    }
}

/* ---- image headers ----------------------------------------------------------------- */

static void load_expect(ev_files_t *f, const char *name, const void *data, size_t len, int want_rc,
                        const char *want)
{
    ev_files_item_t *it = NULL;
    ev_files_source_t src = {
        .kind = EV_FILE_IMAGE, .filename = name, .content = data, .content_len = len};
    EXPECT_REASON(want_rc, want, ev_files_load(f, &it, &src, &reason));
    ev_files_item_free(it);
}

/* A HEIF header: ftyp, then meta (a full box) / iprp / ipco / ispe. */
static unsigned char *heif_with(uint32_t w, uint32_t h, size_t *len)
{
    static const unsigned char ftyp[] = {0, 0, 0, 0x18, 'f', 't', 'y', 'p', 'h', 'e', 'i', 'c',
                                         0, 0, 0, 0,    'm', 'i', 'f', '1', 'h', 'e', 'i', 'c'};
    unsigned char *b = calloc(1, 200), *p = b;
    memcpy(p, ftyp, sizeof(ftyp));
    p += sizeof(ftyp);
    const uint32_t ispe = 20, ipco = 8 + ispe, iprp = 8 + ipco, meta = 12 + iprp;
    const struct {
        uint32_t size;
        const char *type;
        int full;
    } boxes[] = {{meta, "meta", 1}, {iprp, "iprp", 0}, {ipco, "ipco", 0}, {ispe, "ispe", 1}};
    for (size_t i = 0; i < 4; i++) {
        p[0] = (unsigned char)(boxes[i].size >> 24);
        p[1] = (unsigned char)(boxes[i].size >> 16);
        p[2] = (unsigned char)(boxes[i].size >> 8);
        p[3] = (unsigned char)boxes[i].size;
        memcpy(p + 4, boxes[i].type, 4);
        p += 8 + (boxes[i].full ? 4 : 0);
    }
    const uint32_t dims[2] = {w, h};
    for (int i = 0; i < 2; i++, p += 4) {
        p[0] = (unsigned char)(dims[i] >> 24);
        p[1] = (unsigned char)(dims[i] >> 16);
        p[2] = (unsigned char)(dims[i] >> 8);
        p[3] = (unsigned char)dims[i];
    }
    *len = (size_t)(p - b);
    return b;
}

static void test_image_headers(void)
{
    ev_files_t *f = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_files_new(&f, &default_opts), 0);
    size_t len = 0;
    unsigned char *png = ev_hostile_png(60000, 60000, &len);
    load_expect(f, "huge.png", png, len, EV_ELIMIT,
                "image 'huge.png' is 60000 x 60000 pixels (3600.0 megapixels), limit is 33 "
                "megapixels");
    free(png);
    png = ev_hostile_png(5000, 5000, &len);
    load_expect(f, "big.png", png, len, 0, NULL);
    /* Cut inside IHDR: still a PNG to libmagic, but no dimensions. */
    load_expect(f, "cut.png", png, 20, EV_EPARSE,
                "image 'cut.png' is damaged: its header cannot be read");
    free(png);
    unsigned char *jpg = ev_hostile_jpeg(65000, 65000, &len);
    load_expect(f, "huge.jpg", jpg, len, EV_ELIMIT,
                "image 'huge.jpg' is 65000 x 65000 pixels (4225.0 megapixels), limit is 33 "
                "megapixels");
    free(jpg);
    jpg = ev_hostile_jpeg(1920, 1080, &len);
    load_expect(f, "photo.jpg", jpg, len, 0, NULL);
    free(jpg);
    /* A JPEG with no frame header at all. */
    load_expect(f, "empty.jpg", jpeg_bytes, sizeof(jpeg_bytes), EV_EPARSE,
                "image 'empty.jpg' is damaged: its header cannot be read");
    load_expect(f, "tiny.webp", webp_bytes, sizeof(webp_bytes), 0, NULL);
    unsigned char *heif = heif_with(8000, 6000, &len);
    load_expect(f, "camera.heic", heif, len, EV_ELIMIT,
                "image 'camera.heic' is 8000 x 6000 pixels (48.0 megapixels), limit is 33 "
                "megapixels");
    free(heif);
    heif = heif_with(4032, 3024, &len);
    load_expect(f, "phone.heic", heif, len, 0, NULL);
    free(heif);
    ev_files_free(f);
}

/* A ZIP archive with a PDF inside its bytes is a ZIP archive. */
static void test_polyglot_pdf(void)
{
    ev_files_t *f = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_files_new(&f, &default_opts), 0);
    size_t len = 0;
    char *poly = ev_hostile_polyglot(&len);
    ev_files_item_t *it = NULL;
    ev_files_source_t src = {
        .kind = EV_FILE_PDF, .filename = "slides.pdf", .content = poly, .content_len = len};
    EXPECT_REASON(EV_ETYPE, "declared PDF is a ZIP archive", ev_files_load(f, &it, &src, &reason));
    free(poly);
    ev_files_free(f);
}

static const ev_test_t files_tests[] = {
    {"image headers: dimensions without decoding", test_image_headers},
    {"polyglot PDF", test_polyglot_pdf},
    {"classify every fixture", test_classify_every_fixture},
    {"declared PDF verdicts", test_declared_pdf_verdicts},
    {"image verdicts", test_image_verdicts},
    {"filenames in reasons are sanitised", test_filenames_in_reasons_are_sanitised},
    {"size limits", test_size_limits},
    {"image count", test_image_count},
    {"format size", test_format_size},
    {"friendly mime names", test_friendly_mime_names},
    {"load from content", test_load_content},
    {"storage paths (openat2)", test_traversal_openat2},
    {"storage paths (realpath fallback)", test_traversal_realpath_fallback},
    {"paths refused without UPLOAD_DIR", test_paths_refused_without_upload_dir},
    {"options from the configuration", test_options_from_config},
    {"one libmagic handle per thread, concurrently", test_magic_handle_per_thread},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"files", NULL, NULL, files_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
