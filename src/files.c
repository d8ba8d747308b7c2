/*
 * files.c - loading submission files safely and deciding what they are.
 *
 * What: turns a submission_files row (content bytea or a storage path beneath
 * UPLOAD_DIR) into checked bytes plus their libmagic MIME type and SHA-256, or
 * into a reason a person understands ("declared PDF is a ZIP archive").
 *
 * How:
 *   - Paths are first checked lexically (empty, NUL, absolute, `..`), then
 *     opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) relative to
 *     a fresh O_PATH descriptor of UPLOAD_DIR, so the kernel refuses any
 *     resolution (symlinks included) that would leave the directory without
 *     ever opening the target. Where openat2 is unavailable (ENOSYS, or EPERM
 *     from a seccomp filter) we fall back to realpath() of both the directory
 *     and the joined path, a prefix check, and open(O_NOFOLLOW) of the
 *     resolved path; that fallback has the usual residual race if an
 *     intermediate directory is swapped for a symlink between realpath() and
 *     open(), which openat2 does not have.
 *   - A file is first resolved to an O_PATH descriptor, which opens nothing:
 *     fstat() on it refuses anything but a regular file (a FIFO or device is
 *     never opened) and compares the size with the limit before any
 *     allocation (an oversized file is never opened for reading). Only then
 *     is it opened for reading, resolved the same strict way, O_NONBLOCK |
 *     O_NOCTTY, and checked to be the same inode. The read is bounded by
 *     limit + 1 bytes, so a file that grows meanwhile is still caught.
 *   - Classification uses libmagic with MAGIC_MIME_TYPE on the first MiB.
 *
 * Threads: an ev_files_t (and its magic_t) is owned by one worker thread;
 * nothing here is shared, so there are no locks. The pure helpers are
 * reentrant. This module never logs.
 */
#include "ev/files.h"

#include "ev/error.h"
#include "ev/imagehdr.h"
#include "ev/utf8.h"
#include "ev/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Bytes handed to libmagic; every type we distinguish is decided far earlier. */
#define CLASSIFY_PREFIX ((size_t)1024 * 1024)
/* Longest filename or path quoted in a reason, in bytes, before shortening. */
#define DISPLAY_MAX 80

struct ev_files {
    ev_files_options_t opts; /* upload_dir points at upload_dir_copy */
    char *upload_dir_copy;
    magic_t magic;
};

struct ev_files_item {
    ev_file_kind_t kind;
    char *filename;            /* sanitised for display */
    const unsigned char *data; /* == owned, or borrowed from the source */
    size_t len;
    unsigned char *owned; /* bytes read from disk, or NULL */
    char mime[EV_FILES_MIME_MAX];
    char sha256[EV_HASH_SHA256_HEX_LEN];
};

/* ---- small helpers ------------------------------------------------------- */

static void set_reason(char **reason, char *s)
{
    if (reason)
        *reason = s;
    else
        free(s);
}

/*
 * A copy of untrusted text fit for a reason: valid UTF-8, control characters
 * and invalid bytes replaced by '?', at most DISPLAY_MAX bytes of the
 * original followed by "..." when shortened.
 */
static char *display_name(const char *s, size_t n)
{
    char *out = ev_malloc(DISPLAY_MAX + 4);
    size_t o = 0, i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = ev_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        size_t emit = l ? l : 1;
        if (o + emit > DISPLAY_MAX) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (l == 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) {
            out[o++] = '?';
        } else {
            memcpy(out + o, s + i, l);
            o += l;
        }
        i += emit;
    }
    out[o] = '\0';
    return out;
}

static char *display_cstr(const char *s)
{
    return display_name(s ? s : "", s ? strlen(s) : 0);
}

/* ---- kinds and options ---------------------------------------------------- */

const char *ev_files_kind_name(ev_file_kind_t kind)
{
    return kind == EV_FILE_PDF ? "pdf" : "image";
}

int ev_files_kind_parse(ev_file_kind_t *out, const char *s)
{
    if (s && strcmp(s, "pdf") == 0) {
        *out = EV_FILE_PDF;
        return 0;
    }
    if (s && strcmp(s, "image") == 0) {
        *out = EV_FILE_IMAGE;
        return 0;
    }
    return EV_EINVAL;
}

void ev_files_options_from_config(ev_files_options_t *opts, const ev_config_t *cfg)
{
    ev_files_options_t o = EV_FILES_OPTIONS_INIT;
    o.pdf_max_bytes = cfg->pdf_max_bytes;
    o.pdf_max_pages = cfg->pdf_max_pages;
    o.image_max_bytes = cfg->image_max_bytes;
    o.max_images = cfg->max_images;
    o.image_max_megapixels = cfg->image_max_megapixels;
    o.upload_dir = cfg->upload_dir;
    *opts = o;
}

int ev_files_new(ev_files_t **out, const ev_files_options_t *opts)
{
    int rc = 0;
    ev_files_t *f = ev_calloc(1, sizeof(*f));
    f->opts = *opts;
    if (opts->upload_dir && opts->upload_dir[0] != '\0')
        f->upload_dir_copy = ev_strdup(opts->upload_dir);
    f->opts.upload_dir = f->upload_dir_copy;

    f->magic = magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR);
    if (!f->magic || magic_load(f->magic, NULL) != 0) {
        rc = EV_ECONFIG;
        goto out;
    }
out:
    if (rc < 0) {
        ev_files_free(f);
        f = NULL;
    }
    *out = f;
    return rc;
}

void ev_files_free(ev_files_t *f)
{
    if (!f)
        return;
    if (f->magic)
        magic_close(f->magic);
    free(f->upload_dir_copy);
    free(f);
}

const ev_files_options_t *ev_files_options(const ev_files_t *f)
{
    return &f->opts;
}

/* ---- classification ------------------------------------------------------- */

int ev_files_classify(ev_files_t *f, char *mime, size_t mimelen, const void *data, size_t len)
{
    EV_ASSERT(mimelen > 0);
    mime[0] = '\0';
    if (len == 0) {
        snprintf(mime, mimelen, "inode/x-empty");
        return 0;
    }
    const char *m = magic_buffer(f->magic, data, len < CLASSIFY_PREFIX ? len : CLASSIFY_PREFIX);
    if (!m)
        return EV_EIO;
    snprintf(mime, mimelen, "%s", m);
    return 0;
}

static const struct {
    const char *mime;
    const char *phrase;
} mime_phrases[] = {
    {"application/pdf", "a PDF document"},
    {"application/zip", "a ZIP archive"},
    {"application/x-zip-compressed", "a ZIP archive"},
    {"application/gzip", "a gzip archive"},
    {"application/x-gzip", "a gzip archive"},
    {"application/x-bzip2", "a bzip2 archive"},
    {"application/x-xz", "an xz archive"},
    {"application/zstd", "a zstd archive"},
    {"application/zlib", "zlib-compressed data"},
    {"application/x-tar", "a tar archive"},
    {"application/x-rar", "a RAR archive"},
    {"application/vnd.rar", "a RAR archive"},
    {"application/x-7z-compressed", "a 7-Zip archive"},
    {"text/html", "an HTML document"},
    {"text/plain", "plain text"},
    {"text/xml", "an XML document"},
    {"application/xml", "an XML document"},
    {"application/json", "a JSON document"},
    {"text/csv", "a CSV table"},
    {"text/rtf", "an RTF document"},
    {"application/rtf", "an RTF document"},
    {"application/postscript", "a PostScript document"},
    {"application/msword", "a Word document"},
    {"application/vnd.openxmlformats-officedocument.wordprocessingml.document", "a Word document"},
    {"application/vnd.ms-excel", "an Excel spreadsheet"},
    {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "an Excel spreadsheet"},
    {"application/vnd.ms-powerpoint", "a PowerPoint presentation"},
    {"application/vnd.openxmlformats-officedocument.presentationml.presentation",
     "a PowerPoint presentation"},
    {"application/vnd.oasis.opendocument.text", "an OpenDocument text"},
    {"application/vnd.oasis.opendocument.spreadsheet", "an OpenDocument spreadsheet"},
    {"application/vnd.oasis.opendocument.presentation", "an OpenDocument presentation"},
    {"application/epub+zip", "an EPUB e-book"},
    {"image/png", "a PNG image"},
    {"image/jpeg", "a JPEG image"},
    {"image/gif", "a GIF image"},
    {"image/webp", "a WebP image"},
    {"image/heic", "a HEIC image"},
    {"image/heif", "a HEIF image"},
    {"image/avif", "an AVIF image"},
    {"image/svg+xml", "an SVG image"},
    {"image/bmp", "a BMP image"},
    {"image/x-ms-bmp", "a BMP image"},
    {"image/tiff", "a TIFF image"},
    {"image/vnd.microsoft.icon", "an icon"},
    {"image/x-icon", "an icon"},
    {"image/vnd.adobe.photoshop", "a Photoshop image"},
    {"application/x-executable", "a program (executable)"},
    {"application/x-pie-executable", "a program (executable)"},
    {"application/x-sharedlib", "a program library"},
    {"application/x-dosexec", "a Windows program"},
    {"application/x-mach-binary", "a macOS program"},
    {"text/x-shellscript", "a shell script"},
    {"application/javascript", "a JavaScript program"},
    {"text/javascript", "a JavaScript program"},
    {"application/octet-stream", "unrecognised binary data"},
    {"inode/x-empty", "empty"},
    {"application/x-empty", "empty"},
};

const char *ev_files_describe_mime(const char *mime)
{
    if (!mime)
        return NULL;
    for (size_t i = 0; i < EV_ARRAY_LEN(mime_phrases); i++)
        if (strcmp(mime, mime_phrases[i].mime) == 0)
            return mime_phrases[i].phrase;
    if (strncmp(mime, "video/", 6) == 0)
        return "a video";
    if (strncmp(mime, "audio/", 6) == 0)
        return "an audio file";
    return NULL;
}

/* A phrase for any mime; *tmp receives an allocation to free when needed. */
static const char *phrase_for(const char *mime, char **tmp)
{
    const char *p = ev_files_describe_mime(mime);
    *tmp = NULL;
    if (p)
        return p;
    *tmp = ev_asprintf("a file of type %s", mime && mime[0] ? mime : "unknown");
    return *tmp;
}

static const char *const accepted_images[] = {"image/png", "image/jpeg", "image/webp", "image/heic",
                                              "image/heif"};

bool ev_files_image_mime_accepted(const char *mime)
{
    if (!mime)
        return false;
    for (size_t i = 0; i < EV_ARRAY_LEN(accepted_images); i++)
        if (strcmp(mime, accepted_images[i]) == 0)
            return true;
    return false;
}

/* ---- sizes ------------------------------------------------------------------ */

void ev_files_format_size(char *buf, size_t buflen, int64_t bytes, bool exact_whole)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) {
        snprintf(buf, buflen, "%lld %s", (long long)bytes, bytes == 1 ? "byte" : "bytes");
        return;
    }
    int u = 0;
    int64_t unit = 1024;
    while (u + 1 < (int)EV_ARRAY_LEN(units) && bytes >= unit * 1024) {
        unit *= 1024;
        u++;
    }
    if (exact_whole && bytes % unit == 0)
        snprintf(buf, buflen, "%lld %s", (long long)(bytes / unit), units[u]);
    else
        snprintf(buf, buflen, "%.1f %s", (double)bytes / (double)unit, units[u]);
}

int ev_files_check_size(const ev_files_options_t *opts, ev_file_kind_t kind, const char *filename,
                        int64_t size, char **reason)
{
    int64_t limit = kind == EV_FILE_PDF ? opts->pdf_max_bytes : opts->image_max_bytes;
    if (size <= limit) {
        set_reason(reason, NULL);
        return 0;
    }

    char have[96], lim[96], have1[48], lim1[48];
    ev_files_format_size(have1, sizeof(have1), size, false);
    ev_files_format_size(lim1, sizeof(lim1), limit, false);
    if (strcmp(have1, lim1) == 0) {
        /* Rounding makes the two look equal ("4.0 MiB" vs "4 MiB"): give the
         * exact byte counts so the reader sees why it was refused. */
        ev_files_format_size(lim1, sizeof(lim1), limit, true);
        snprintf(have, sizeof(have), "%s (%lld bytes)", have1, (long long)size);
        snprintf(lim, sizeof(lim), "%s (%lld bytes)", lim1, (long long)limit);
    } else {
        snprintf(have, sizeof(have), "%s", have1);
        ev_files_format_size(lim, sizeof(lim), limit, true);
    }

    char *r;
    if (kind == EV_FILE_PDF) {
        r = ev_asprintf("PDF is %s, limit is %s", have, lim);
    } else if (filename && filename[0]) {
        char *name = display_cstr(filename);
        r = ev_asprintf("image '%s' is %s, limit is %s", name, have, lim);
        free(name);
    } else {
        r = ev_asprintf("image is %s, limit is %s", have, lim);
    }
    set_reason(reason, r);
    return EV_ETOOBIG;
}

/* ---- type verdicts ---------------------------------------------------------- */

int ev_files_check_type(ev_file_kind_t kind, const char *filename, const char *mime, size_t len,
                        char **reason)
{
    bool empty =
        len == 0 ||
        (mime && (strcmp(mime, "inode/x-empty") == 0 || strcmp(mime, "application/x-empty") == 0));
    char *r = NULL, *tmp = NULL;
    int rc = 0;

    if (kind == EV_FILE_PDF) {
        if (empty) {
            r = ev_asprintf("declared PDF is empty");
            rc = EV_ETYPE;
        } else if (!mime || strcmp(mime, "application/pdf") != 0) {
            r = ev_asprintf("declared PDF is %s", phrase_for(mime, &tmp));
            rc = EV_ETYPE;
        }
        goto out;
    }

    /* Images: the display name goes first when there is one. */
    char *name = filename && filename[0] ? display_cstr(filename) : NULL;
    char *subject = name ? ev_asprintf("image '%s'", name) : ev_asprintf("image");
    if (empty) {
        r = ev_asprintf("%s is empty", subject);
        rc = EV_ETYPE;
    } else if (!mime || strncmp(mime, "image/", 6) != 0) {
        r = ev_asprintf("%s is %s, not an image", subject, phrase_for(mime, &tmp));
        rc = EV_ETYPE;
    } else if (!ev_files_image_mime_accepted(mime)) {
        if (name)
            r = ev_asprintf("image '%s': type %s is not accepted (png, jpeg, webp, heic, heif)",
                            name, mime);
        else
            r = ev_asprintf("image type %s is not accepted (png, jpeg, webp, heic, heif)", mime);
        rc = EV_ETYPE;
    }
    free(subject);
    free(name);
out:
    free(tmp);
    set_reason(reason, r);
    return rc;
}

int ev_files_check_image(const ev_files_options_t *opts, const char *filename, const char *mime,
                         const void *data, size_t len, char **reason)
{
    uint32_t w = 0, h = 0;
    int rc = ev_imagehdr_size(data, len, mime, &w, &h);
    char *name = filename && filename[0] ? display_cstr(filename) : NULL;
    char *subject = name ? ev_asprintf("image '%s'", name) : ev_strdup("image");
    char *r = NULL;
    double mp = (double)w * (double)h / 1e6;
    if (rc < 0) {
        r = ev_asprintf("%s is damaged: its header cannot be read", subject);
        rc = EV_EPARSE;
    } else if (mp > opts->image_max_megapixels) {
        r = ev_asprintf("%s is %u x %u pixels (%.1f megapixels), limit is %g megapixels", subject,
                        w, h, mp, opts->image_max_megapixels);
        rc = EV_ELIMIT;
    }
    free(subject);
    free(name);
    set_reason(reason, r);
    return rc;
}

int ev_files_check_count(const ev_files_options_t *opts, int n_images, char **reason)
{
    if (n_images <= opts->max_images) {
        set_reason(reason, NULL);
        return 0;
    }
    set_reason(reason, ev_asprintf("%d image%s, limit is %d", n_images, n_images == 1 ? "" : "s",
                                   opts->max_images));
    return EV_ELIMIT;
}

/* ---- path resolution -------------------------------------------------------- */

/* Lexical checks; returns NULL when acceptable, else a static explanation. */
static const char *path_lexical_problem(const char *path, size_t len)
{
    if (len == 0)
        return "the path is empty";
    if (memchr(path, '\0', len))
        return "it contains a NUL byte";
    if (path[0] == '/')
        return "absolute paths are not allowed";
    if (len >= PATH_MAX)
        return "the path is too long";
    /* Any `..` component, wherever it is: "..", "../x", "x/..", "x/../y". */
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || path[i] == '/') {
            if (i - start == 2 && path[start] == '.' && path[start + 1] == '.')
                return "it contains a '..' component";
            start = i + 1;
        }
    }
    return NULL;
}

static long sys_openat2(int dirfd, const char *path, struct open_how *how)
{
#ifdef SYS_openat2
    return syscall(SYS_openat2, dirfd, path, how, sizeof(*how));
#else
    (void)dirfd, (void)path, (void)how;
    errno = ENOSYS;
    return -1;
#endif
}

static const char *errno_text(int e)
{
    /* strerrordesc_np returns constant text and is thread-safe, unlike
     * strerror. */
    const char *s = strerrordesc_np(e);
    return s ? s : "unknown error";
}

/*
 * Opens `path` (NUL-terminated, lexically checked) beneath the upload
 * directory with `oflags` (O_CLOEXEC is added; with O_PATH nothing else may
 * be given). Returns the fd, or a negative EV code with *why set to constant
 * text for the reason.
 */
static int open_beneath(const ev_files_t *f, const char *path, int oflags, const char **why)
{
    int rc;
    int dirfd = -1, fd = -1;
    char *root = NULL, *joined = NULL, *resolved = NULL;

    if (!f->opts.force_path_fallback) {
        dirfd = open(f->opts.upload_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0) {
            *why = "the upload directory (UPLOAD_DIR) cannot be opened";
            rc = EV_EIO;
            goto out;
        }
        struct open_how how = {.flags = (uint64_t)(oflags | O_CLOEXEC),
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
        fd = (int)sys_openat2(dirfd, path, &how);
        if (fd >= 0) {
            rc = fd;
            goto out;
        }
        switch (errno) {
        case EXDEV:
            *why = "it resolves outside the upload directory";
            rc = EV_EPATH;
            goto out;
        case ELOOP:
            *why = "it has too many or unsafe symbolic links";
            rc = EV_EPATH;
            goto out;
        case ENOENT:
        case ENOTDIR:
            *why = "no such file";
            rc = EV_ENOTFOUND;
            goto out;
        case ENXIO: /* a socket, or a device with no driver */
        case ENODEV:
            *why = "it is not a regular file";
            rc = EV_EPATH;
            goto out;
        case ENOSYS:
        case EPERM: /* seccomp filters that predate openat2 answer EPERM */
        case E2BIG:
            break; /* fall back below */
        default:
            *why = errno_text(errno);
            rc = EV_EIO;
            goto out;
        }
    }

    /* Fallback: canonicalise both sides, require the prefix, never follow a
     * final symlink (the resolved path has none left, so one appearing now
     * is an attack). */
    root = realpath(f->opts.upload_dir, NULL);
    if (!root) {
        *why = "the upload directory (UPLOAD_DIR) cannot be opened";
        rc = EV_EIO;
        goto out;
    }
    joined = ev_asprintf("%s/%s", root, path);
    resolved = realpath(joined, NULL);
    if (!resolved) {
        if (errno == ENOENT || errno == ENOTDIR) {
            *why = "no such file";
            rc = EV_ENOTFOUND;
        } else if (errno == ELOOP) {
            *why = "it has too many or unsafe symbolic links";
            rc = EV_EPATH;
        } else {
            *why = errno_text(errno);
            rc = EV_EIO;
        }
        goto out;
    }
    size_t rl = strlen(root);
    bool inside =
        strcmp(root, "/") == 0 ? true : strncmp(resolved, root, rl) == 0 && resolved[rl] == '/';
    if (!inside) {
        /* Also covers a path naming UPLOAD_DIR itself. */
        *why = strcmp(resolved, root) == 0 ? "it is not a regular file"
                                           : "it resolves outside the upload directory";
        rc = EV_EPATH;
        goto out;
    }
    fd = open(resolved, oflags | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ELOOP) {
            *why = "it was replaced by a symbolic link";
            rc = EV_EPATH;
        } else if (errno == ENOENT) {
            *why = "no such file";
            rc = EV_ENOTFOUND;
        } else if (errno == ENXIO || errno == ENODEV) {
            *why = "it is not a regular file";
            rc = EV_EPATH;
        } else {
            *why = errno_text(errno);
            rc = EV_EIO;
        }
        goto out;
    }
    rc = fd;
out:
    if (dirfd >= 0)
        close(dirfd);
    free(resolved);
    free(joined);
    free(root);
    return rc;
}

/*
 * Reads the file at `path` beneath UPLOAD_DIR. On failure *why explains it
 * for the reason; *size_seen is the size found when the limit was exceeded.
 */
static int read_beneath(ev_files_t *f, unsigned char **data, size_t *len, const char *path,
                        size_t path_len, int64_t max_bytes, int64_t *size_seen, const char **why)
{
    int rc = 0;
    int pfd = -1, fd = -1;
    unsigned char *buf = NULL;
    size_t used = 0;
    char *cpath = NULL;

    EV_ASSERT(max_bytes >= 0);
    *data = NULL;
    *len = 0;
    *size_seen = 0;
    *why = NULL;

    if (!f->opts.upload_dir) {
        *why = "UPLOAD_DIR is not configured";
        rc = EV_EPATH;
        goto out;
    }
    if ((*why = path_lexical_problem(path ? path : "", path ? path_len : 0)) != NULL) {
        rc = EV_EPATH;
        goto out;
    }
    cpath = ev_strndup(path, path_len);

    /* First an O_PATH descriptor: it lets us look at the file (type, size)
     * without opening it, so a FIFO or device is never opened and an
     * oversized file never even opened for reading. */
    pfd = open_beneath(f, cpath, O_PATH, why);
    if (pfd < 0) {
        rc = pfd;
        goto out;
    }
    struct stat pst;
    if (fstat(pfd, &pst) != 0) {
        *why = errno_text(errno);
        rc = EV_EIO;
        goto out;
    }
    if (!S_ISREG(pst.st_mode)) {
        *why = S_ISDIR(pst.st_mode) ? "it is a directory, not a regular file"
                                    : "it is not a regular file";
        rc = EV_EPATH;
        goto out;
    }
    if (pst.st_size > max_bytes) {
        *size_seen = (int64_t)pst.st_size;
        rc = EV_ETOOBIG;
        goto out;
    }

    /* Now open it for reading, resolved the same strict way, and make sure it
     * is still the very file we looked at (not swapped in between). */
    fd = open_beneath(f, cpath, O_RDONLY | O_NOCTTY | O_NONBLOCK, why);
    if (fd < 0) {
        rc = fd;
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        *why = errno_text(errno);
        rc = EV_EIO;
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_dev != pst.st_dev || st.st_ino != pst.st_ino) {
        *why = "it changed while being opened";
        rc = EV_EPATH;
        goto out;
    }
    if (st.st_size > max_bytes) {
        *size_seen = (int64_t)st.st_size;
        rc = EV_ETOOBIG;
        goto out;
    }
    /* Regular files ignore O_NONBLOCK, but clear it so nothing surprises. */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);

    /* Read at most max_bytes + 1 so growth after fstat() is still refused. */
    size_t bound = (size_t)max_bytes + 1;
    size_t cap = (size_t)st.st_size + 1;
    buf = ev_malloc(cap + 1);
    for (;;) {
        if (used == cap) {
            if (cap >= bound)
                break;
            cap = cap * 2 < bound ? cap * 2 : bound;
            buf = ev_realloc(buf, cap + 1);
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *why = errno_text(errno);
            rc = EV_EIO;
            goto out;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    if (used > (size_t)max_bytes) {
        *size_seen = (int64_t)used;
        rc = EV_ETOOBIG;
        goto out;
    }
    buf[used] = '\0';
    *data = buf;
    *len = used;
    buf = NULL;
out:
    if (fd >= 0)
        close(fd);
    if (pfd >= 0)
        close(pfd);
    free(buf);
    free(cpath);
    return rc;
}

/* The reason for a failed read_beneath(), naming the (sanitised) path. */
static char *path_reason(int rc, const char *path, size_t path_len, const char *why)
{
    char *shown = display_name(path ? path : "", path ? path_len : 0);
    char *r;
    if (rc == EV_ENOTFOUND)
        r = ev_asprintf("storage path '%s' not found in the upload directory", shown);
    else if (rc == EV_EPATH)
        r = ev_asprintf("storage path '%s' refused: %s", shown, why ? why : "refused");
    else
        r = ev_asprintf("storage path '%s' cannot be read: %s", shown, why ? why : "error");
    free(shown);
    return r;
}

int ev_files_read_path(ev_files_t *f, unsigned char **data, size_t *len, const char *path,
                       size_t path_len, int64_t max_bytes, char **reason)
{
    const char *why = NULL;
    int64_t seen = 0;
    int rc = read_beneath(f, data, len, path, path_len, max_bytes, &seen, &why);
    char *r = NULL;
    if (rc == EV_ETOOBIG) {
        char have[48], lim[48], *shown = display_name(path, path_len);
        ev_files_format_size(have, sizeof(have), seen, false);
        ev_files_format_size(lim, sizeof(lim), max_bytes, true);
        r = ev_asprintf("storage path '%s' is %s, limit is %s", shown, have, lim);
        free(shown);
    } else if (rc < 0) {
        r = path_reason(rc, path, path_len, why);
    }
    set_reason(reason, r);
    return rc;
}

/* ---- loading ------------------------------------------------------------------ */

int ev_files_load(ev_files_t *f, ev_files_item_t **out, const ev_files_source_t *src, char **reason)
{
    int rc = 0;
    char *r = NULL;
    ev_files_item_t *it = ev_calloc(1, sizeof(*it));
    it->kind = src->kind;
    it->filename = display_cstr(src->filename);
    const char *kind_label = src->kind == EV_FILE_PDF ? "PDF" : "image";

    bool has_path = src->storage_path != NULL;
    if (src->content && has_path) {
        r = ev_asprintf("%s '%s' has both content and a storage path", kind_label, it->filename);
        rc = EV_EINVAL;
        goto out;
    }
    if (!src->content && !has_path) {
        r = ev_asprintf("%s '%s' has neither content nor a storage path", kind_label, it->filename);
        rc = EV_EINVAL;
        goto out;
    }

    int64_t limit = src->kind == EV_FILE_PDF ? f->opts.pdf_max_bytes : f->opts.image_max_bytes;
    if (src->content) {
        it->data = src->content;
        it->len = src->content_len;
    } else {
        size_t plen = src->storage_path_len ? src->storage_path_len : strlen(src->storage_path);
        const char *why = NULL;
        int64_t seen = 0;
        rc = read_beneath(f, &it->owned, &it->len, src->storage_path, plen, limit, &seen, &why);
        if (rc == EV_ETOOBIG) {
            /* Said the same way as for content: the size fstat() saw (the
             * file was never read), not the path. */
            rc = ev_files_check_size(&f->opts, src->kind, src->filename, seen, &r);
            EV_ASSERT(rc == EV_ETOOBIG);
            goto out;
        }
        if (rc < 0) {
            r = path_reason(rc, src->storage_path, plen, why);
            goto out;
        }
        it->data = it->owned;
    }

    rc = ev_files_check_size(&f->opts, src->kind, src->filename, (int64_t)it->len, &r);
    if (rc < 0)
        goto out;

    rc = ev_files_classify(f, it->mime, sizeof(it->mime), it->data, it->len);
    if (rc < 0) {
        const char *err = magic_error(f->magic);
        r = ev_asprintf("file type detection failed: %s", err ? err : "unknown libmagic error");
        goto out;
    }
    rc = ev_files_check_type(src->kind, src->filename, it->mime, it->len, &r);
    if (rc < 0)
        goto out;
    /* Dimensions from the header: a tiny file can declare a gigapixel. */
    if (src->kind == EV_FILE_IMAGE &&
        (rc = ev_files_check_image(&f->opts, src->filename, it->mime, it->data, it->len, &r)) < 0)
        goto out;

    ev_hash_sha256_hex(it->sha256, it->data, it->len);

out:
    if (rc < 0) {
        ev_files_item_free(it);
        it = NULL;
    }
    set_reason(reason, r);
    *out = it;
    return rc;
}

void ev_files_item_free(ev_files_item_t *item)
{
    if (!item)
        return;
    free(item->owned);
    free(item->filename);
    free(item);
}

ev_file_kind_t ev_files_item_kind(const ev_files_item_t *item)
{
    return item->kind;
}

const unsigned char *ev_files_item_data(const ev_files_item_t *item, size_t *len)
{
    if (len)
        *len = item->len;
    return item->data;
}

const char *ev_files_item_mime(const ev_files_item_t *item)
{
    return item->mime;
}

const char *ev_files_item_filename(const ev_files_item_t *item)
{
    return item->filename;
}

const char *ev_files_item_sha256(const ev_files_item_t *item)
{
    return item->sha256;
}
