/*
 * api_request.h - what the organisers' API makes of a request body, apart
 * from HTTP: the streamed multipart upload of a submission and the JSON body
 * of a new event. api_server.c feeds these from libmicrohttpd; the fuzz
 * target and tests feed them directly.
 *
 * Uploads: each file part is written, as it arrives, to a temporary file
 * ".tmp-<random>" in the upload directory; its size is checked on every
 * chunk, so a file over its limit is refused (413) when the first byte past
 * the limit arrives, and nothing of it stays on disk. Only when the whole
 * body has arrived and checked out (title present, counts, types) are the
 * files synced and renamed to their final names; the caller then inserts the
 * rows in one transaction and, if that fails, discards the renamed files.
 * Every file not kept is unlinked by ev_api_upload_free.
 *
 * Errors: a refused body sets one ev_api_error_t (HTTP status, a short
 * machine code, a sentence a person understands); the first error wins.
 *
 * Threads: an upload belongs to one request; libmicrohttpd calls a request
 * from one thread at a time. Nothing logs.
 */
#ifndef EV_API_REQUEST_H
#define EV_API_REQUEST_H

#include "ev/files.h"
#include "ev/queue.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EV_API_TITLE_MAX 500
#define EV_API_DESCRIPTION_MAX 20000
#define EV_API_FILENAME_MAX 255
/* Longest JSON request body (POST /v1/events). */
#define EV_API_JSON_MAX (64 * 1024)

typedef struct ev_api_error {
    int status;        /* HTTP status; 0 while there is no error */
    char code[32];     /* "file_too_large", "unknown_field", ... */
    char message[320]; /* one sentence for a person */
} ev_api_error_t;

/* Sets *e unless it already holds an error; returns the negative code. */
int ev_api_error_set(ev_api_error_t *e, int rc, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

typedef struct ev_api_upload ev_api_upload_t;

/*
 * A new upload into `dir` (absolute, existing, writable: UPLOAD_DIR/api)
 * whose stored paths are `rel_prefix` + name (e.g. "api/"), with the limits
 * of `fopts` (PDF_MAX_BYTES, IMAGE_MAX_BYTES, MAX_IMAGES). Strings are
 * copied. Free with ev_api_upload_free.
 */
void ev_api_upload_new(ev_api_upload_t **out, const char *dir, const char *rel_prefix,
                       const ev_files_options_t *fopts);

/* Deletes every file this upload still owns (temporary files, and renamed
 * files unless ev_api_upload_keep was called), then frees. Accepts NULL. */
void ev_api_upload_free(ev_api_upload_t *u);

/*
 * One chunk of one form field, in libmicrohttpd's post-processor terms:
 * `off` is the offset of `data` within the field's value (0 starts a new
 * field). Fields: title, description, priority, pdf (at most one file),
 * image (up to MAX_IMAGES files). 0, or a negative code with the error set
 * (the caller stops reading and answers it).
 */
int ev_api_upload_field(ev_api_upload_t *u, const char *key, const char *filename, const char *data,
                        uint64_t off, size_t size);

/*
 * The body has ended: closes the last file, checks the title (present,
 * non-empty, valid UTF-8), description and priority. With `files` (may be
 * NULL to skip it) each file's real type is checked against its field with
 * the pipeline's own rules (ev_files_check_type): a lying file is a 422
 * whose message is the pipeline's reason ("declared PDF is a ZIP archive").
 * 0 or a negative code with the error set.
 */
int ev_api_upload_finish(ev_api_upload_t *u, ev_files_t *files);

/* The error set so far (status 0: none). */
const ev_api_error_t *ev_api_upload_error(const ev_api_upload_t *u);

/* After finish: the hex SHA-256 over title, description, priority and each
 * file's field, name and content digest (what an idempotency key is bound
 * to). */
const char *ev_api_upload_request_hash(const ev_api_upload_t *u);

/*
 * After finish: syncs every file, renames it to its final name and syncs
 * the directory; fills *sub's text fields and files (borrowed from u, valid
 * until ev_api_upload_free). EV_EIO with the error set (500) when the disk
 * refuses. The renamed files are still deleted by ev_api_upload_free unless
 * ev_api_upload_keep is called after the rows are committed.
 */
int ev_api_upload_store(ev_api_upload_t *u, ev_queue_new_submission_t *sub);

/* The rows referencing the stored files are committed: keep the files. */
void ev_api_upload_keep(ev_api_upload_t *u);

/* Files and bytes received so far. */
size_t ev_api_upload_file_count(const ev_api_upload_t *u);
uint64_t ev_api_upload_bytes(const ev_api_upload_t *u);

/* A new event, as parsed from POST /v1/events. Strings owned by the struct;
 * free with ev_api_event_req_clear. */
typedef struct ev_api_event_req {
    char *name, *theme, *rules, *webhook_url;
    bool require_pdf, require_image;
} ev_api_event_req_t;

/*
 * Parses and checks a JSON body: an object with name (1-200 bytes) and theme
 * (1-2000), optional rules (up to 20000), require_pdf, require_image
 * (booleans) and webhook_url (http or https, at most 2000 bytes, a public
 * target unless allow_private, see ev_webhook_url_check). Unknown members,
 * wrong types, bad UTF-8 are 422; a body that is not JSON is 400. 0 or a
 * negative code with *e set; *out is cleared on failure.
 */
int ev_api_parse_event(const char *body, size_t len, bool allow_private, ev_api_event_req_t *out,
                       ev_api_error_t *e);
void ev_api_event_req_clear(ev_api_event_req_t *r);

#endif
