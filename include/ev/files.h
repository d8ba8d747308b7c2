/*
 * files.h - loading and classifying submission files (SPEC §4, §5).
 *
 * A submission file row (submission_files) carries either its bytes
 * (`content` bytea) or a `storage_path` relative to UPLOAD_DIR. This module
 * turns such a row into bytes the pipeline can trust, or into a verdict
 * reason a person understands:
 *
 *   - storage paths are resolved strictly beneath UPLOAD_DIR: absolute paths,
 *     `..` components, NUL bytes, empty paths and anything (symlinks included)
 *     that resolves outside the directory are refused before the target is
 *     opened; only regular files are read; with UPLOAD_DIR unset every path is
 *     refused;
 *   - sizes are checked against their limit before anything is allocated or
 *     read, and reads are bounded;
 *   - what a file *is* comes from its bytes (libmagic, MIME type), never from
 *     its filename or the declared kind: kind 'pdf' must be application/pdf,
 *     kind 'image' one of the types the providers accept (png, jpeg, webp,
 *     heic, heif).
 *
 * No network, no provider calls, no logging: functions return codes and
 * reasons; the caller decides what to record.
 *
 * Threads: an ev_files_t owns one libmagic handle and belongs to one worker
 * thread (create it on that thread, use it only there, free it there);
 * libmagic handles must never be shared. The verdict helpers and
 * ev_files_describe_mime / ev_files_format_size are pure and reentrant.
 *
 * Reasons: every function that can fail with a user-visible verdict takes
 * `char **reason`; on failure *reason is a new NUL-terminated, valid UTF-8
 * string (caller frees with free()), on success it is set to NULL. Filenames
 * and paths quoted in reasons are sanitised (control characters and invalid
 * UTF-8 replaced, long names shortened) so a reason can be stored in a text
 * column as is.
 */
#ifndef EV_FILES_H
#define EV_FILES_H

#include "ev/config.h"
#include "ev/hash.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The `kind` column of submission_files. */
typedef enum { EV_FILE_PDF = 0, EV_FILE_IMAGE = 1 } ev_file_kind_t;

/* "pdf" / "image". */
const char *ev_files_kind_name(ev_file_kind_t kind);
/* Parses the kind column; returns 0 or EV_EINVAL for anything else. */
int ev_files_kind_parse(ev_file_kind_t *out, const char *s);

typedef struct ev_files_options {
    int64_t pdf_max_bytes;       /* PDF_MAX_BYTES: a larger PDF is a fail */
    int pdf_max_pages;           /* PDF_MAX_PAGES: used by pdf.h, carried here for callers */
    int64_t image_max_bytes;     /* IMAGE_MAX_BYTES: per image */
    int max_images;              /* MAX_IMAGES per submission */
    double image_max_megapixels; /* IMAGE_MAX_MEGAPIXELS: from the header, per image */
    const char *upload_dir;      /* UPLOAD_DIR; NULL: every storage path is refused.
                                    Borrowed: ev_files_new copies it. */
    bool force_path_fallback;    /* tests only: resolve paths with realpath() +
                                    prefix check + O_NOFOLLOW instead of openat2() */
} ev_files_options_t;

#define EV_FILES_MIB ((int64_t)1024 * 1024)
#define EV_FILES_OPTIONS_INIT                                                                      \
    {                                                                                              \
        .pdf_max_bytes = 14 * EV_FILES_MIB, .pdf_max_pages = 100,                                  \
        .image_max_bytes = 4 * EV_FILES_MIB, .max_images = 5, .image_max_megapixels = 33,          \
        .upload_dir = NULL, .force_path_fallback = false                                           \
    }

/* Fills *opts from the loaded configuration. opts->upload_dir borrows
 * cfg->upload_dir, so cfg must outlive opts (not the ev_files_t). */
void ev_files_options_from_config(ev_files_options_t *opts, const ev_config_t *cfg);

/* ---- per-thread object ------------------------------------------------- */

typedef struct ev_files ev_files_t;

/*
 * Creates the per-worker object: copies the options and opens and loads one
 * libmagic handle (magic_open(MAGIC_MIME_TYPE) + magic_load(NULL)).
 * Returns 0, or EV_ECONFIG when the magic database cannot be loaded (*out is
 * NULL). Call on the thread that will use it.
 */
int ev_files_new(ev_files_t **out, const ev_files_options_t *opts);
/* Closes the magic handle (magic_close) and frees. Accepts NULL. */
void ev_files_free(ev_files_t *f);
/* The options in use (a copy owned by f). */
const ev_files_options_t *ev_files_options(const ev_files_t *f);

/* ---- classification ----------------------------------------------------- */

#define EV_FILES_MIME_MAX 128

/*
 * Writes the MIME type libmagic detects for the bytes ("application/pdf",
 * "image/png", "application/octet-stream", ...) into mime (always
 * NUL-terminated, truncated to mimelen). Zero bytes give "inode/x-empty".
 * Only the first MiB is examined: every type we care about is decided there.
 * Returns 0, or EV_EIO when libmagic fails (mime then holds "").
 */
int ev_files_classify(ev_files_t *f, char *mime, size_t mimelen, const void *data, size_t len);

/*
 * A phrase for a MIME type that fits "declared PDF is ___": "a ZIP archive",
 * "an HTML document", "plain text", "a PNG image", "unrecognised binary data",
 * "empty", ... Unknown types give NULL (callers then say "a file of type X").
 */
const char *ev_files_describe_mime(const char *mime);

/* True for the image types the providers accept: image/png, image/jpeg,
 * image/webp, image/heic, image/heif. */
bool ev_files_image_mime_accepted(const char *mime);

/*
 * Human-readable size. With `exact_whole` a whole number of units prints
 * without decimals ("14 MiB"), otherwise one decimal is always shown
 * ("15.0 MiB"). Below 1 KiB: "512 bytes". Always NUL-terminated.
 */
void ev_files_format_size(char *buf, size_t buflen, int64_t bytes, bool exact_whole);

/* ---- verdict helpers (pure) -------------------------------------------- */

/*
 * Size limit for one file of `kind`: 0, or EV_ETOOBIG with a reason such as
 * "PDF is 15.0 MiB, limit is 14 MiB" or "image 'x.png' is 5.2 MiB, limit is
 * 4 MiB" (filename may be NULL: "image is 5.2 MiB, limit is 4 MiB").
 */
int ev_files_check_size(const ev_files_options_t *opts, ev_file_kind_t kind, const char *filename,
                        int64_t size, char **reason);

/*
 * Detected type against the declared kind: 0, or EV_ETYPE with a reason:
 *   pdf:   "declared PDF is a ZIP archive", "declared PDF is empty", ...
 *   image: "image 'x.png' is a PDF document, not an image",
 *          "image 'x.png' is empty",
 *          "image type image/gif is not accepted (png, jpeg, webp, heic, heif)"
 *          (with a filename: "image 'x.gif': type image/gif is not accepted
 *          (png, jpeg, webp, heic, heif)").
 * An empty file (len 0) is reported as empty whatever mime says.
 */
int ev_files_check_type(ev_file_kind_t kind, const char *filename, const char *mime, size_t len,
                        char **reason);

/*
 * An image's header against IMAGE_MAX_MEGAPIXELS (mime as detected, already
 * accepted by ev_files_check_type): 0, or
 *   EV_EPARSE  "image 'x.png' is damaged: its header cannot be read";
 *   EV_ELIMIT  "image 'x.png' is 60000 x 60000 pixels (3600 megapixels),
 *              limit is 33 megapixels".
 * Reads only the header (ev_imagehdr_size); decodes nothing.
 */
int ev_files_check_image(const ev_files_options_t *opts, const char *filename, const char *mime,
                         const void *data, size_t len, char **reason);

/* MAX_IMAGES: 0, or EV_ELIMIT with "7 images, limit is 5". */
int ev_files_check_count(const ev_files_options_t *opts, int n_images, char **reason);

/* ---- loading ------------------------------------------------------------ */

/*
 * Reads the regular file at `path` (path_len bytes; an embedded NUL is
 * refused) relative to UPLOAD_DIR into a new buffer, refusing it before
 * reading when it is larger than max_bytes.
 * Returns 0 with *data (free with free(); NUL-terminated one byte past *len for
 * convenience) and *len, or:
 *   EV_EPATH     refused path: unset UPLOAD_DIR, empty, absolute, `..`, NUL,
 *                resolves outside UPLOAD_DIR, not a regular file (directory,
 *                FIFO, device, socket); the target outside is never opened;
 *   EV_ENOTFOUND no such file beneath UPLOAD_DIR;
 *   EV_ETOOBIG   larger than max_bytes (checked before reading);
 *   EV_EIO       the upload directory or the file cannot be read (permissions,
 *                I/O error): an operator problem, worth an error and a retry.
 * On failure *data is NULL and *reason says why (e.g. "storage path
 * '../etc/passwd' refused: it contains a '..' component").
 */
int ev_files_read_path(ev_files_t *f, unsigned char **data, size_t *len, const char *path,
                       size_t path_len, int64_t max_bytes, char **reason);

/* One submission_files row, as fetched. Exactly one of content/storage_path. */
typedef struct ev_files_source {
    ev_file_kind_t kind;
    const char *filename; /* as declared; may be NULL; only used in reasons */
    const void *content;  /* the content bytea, or NULL; borrowed, see ev_files_load */
    size_t content_len;
    const char *storage_path; /* or NULL */
    size_t storage_path_len;  /* its length as fetched (PQgetlength), so an embedded
                                 NUL is seen and refused; 0 means strlen(storage_path) */
} ev_files_source_t;

/* One loaded, classified file. Opaque; free with ev_files_item_free. */
typedef struct ev_files_item ev_files_item_t;

/*
 * Loads and checks one file: source sanity, size limit (before reading),
 * bytes (from content, or read beneath UPLOAD_DIR), detected type against the
 * kind, and the SHA-256 of the bytes.
 *
 * Returns 0 and a new *out, or a negative code with *out NULL and *reason set:
 *   EV_EINVAL    neither or both of content and storage_path (a broken row);
 *   EV_EPATH, EV_ENOTFOUND, EV_EIO   as ev_files_read_path;
 *   EV_ETOOBIG   over the kind's size limit;
 *   EV_ETYPE     the bytes are not what the kind requires;
 *   EV_EPARSE, EV_ELIMIT   an image's header, as ev_files_check_image;
 *   EV_EIO       also when libmagic fails.
 * EV_EIO is the only code that is not the file's fault (record an error and
 * retry); every other code is a local `fail` with *reason as its text.
 *
 * Ownership: when the bytes come from src->content they are NOT copied; the
 * item borrows them and src->content must stay valid until
 * ev_files_item_free. Bytes read from disk are owned by the item.
 */
int ev_files_load(ev_files_t *f, ev_files_item_t **out, const ev_files_source_t *src,
                  char **reason);
/* Frees the item (and the bytes it owns). Accepts NULL. */
void ev_files_item_free(ev_files_item_t *item);

ev_file_kind_t ev_files_item_kind(const ev_files_item_t *item);
/* The bytes; valid until ev_files_item_free (and, if borrowed, while the source content lives). */
const unsigned char *ev_files_item_data(const ev_files_item_t *item, size_t *len);
/* The detected MIME type, e.g. "image/png" (what to send as the provider's mime_type). */
const char *ev_files_item_mime(const ev_files_item_t *item);
/* The sanitised display filename ("" when none was given). */
const char *ev_files_item_filename(const ev_files_item_t *item);
/* SHA-256 of the bytes, 64 lowercase hex digits (the verdict cache key part). */
const char *ev_files_item_sha256(const ev_files_item_t *item);

#endif
