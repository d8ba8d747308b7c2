/*
 * api_request.c - streamed multipart uploads and JSON event bodies of the
 * organisers' API; see api_request.h.
 *
 * How: a file part is written chunk by chunk to an O_EXCL temporary file in
 * the upload directory while its SHA-256 is computed, and its size is
 * checked before each write, so the first byte past a limit stops the
 * upload with nothing of the file kept. Text fields are kept in memory up to
 * their own small limits. When the body is complete the real type of each
 * file is read from its first MiB with libmagic and judged by
 * ev_files_check_type, the same rule the pipeline applies, so an API client
 * and the verdict see the same reason. Files are fdatasync'ed, renamed to
 * their final names and the directory is synced before the caller commits
 * the rows: a row never points at a file that a crash could lose.
 *
 * Threads: one request's upload is touched by one thread at a time. No
 * locks, no logging.
 */
#include "ev/api_request.h"

#include "ev/error.h"
#include "ev/hash.h"
#include "ev/utf8.h"
#include "ev/util.h"
#include "ev/webhook.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FILES 17 /* one PDF and at most 16 images (MAX_IMAGES' ceiling) */

typedef struct upfile {
    ev_file_kind_t kind;
    char *filename;   /* as sent, clipped; "" when none */
    char *tmp_path;   /* absolute temporary path; NULL once renamed or removed */
    char *final_path; /* absolute final path, set by store */
    char *rel_path;   /* relative to UPLOAD_DIR, set by store */
    int fd;           /* -1 once closed */
    uint64_t size;
    ev_hash_sha256_t hash;
    char sha[EV_HASH_SHA256_HEX_LEN];
} upfile_t;

struct ev_api_upload {
    char *dir, *rel_prefix;
    ev_files_options_t fopts;
    ev_api_error_t err;
    char *title, *description, *priority;
    size_t title_len, description_len, priority_len;
    upfile_t files[MAX_FILES];
    size_t nfiles;
    int nimages;
    bool have_pdf;
    int current;         /* index of the file being received, -1 for none */
    const char *textkey; /* the text field being received */
    uint64_t bytes;
    int priority_value;
    bool kept;
    char request_hash[EV_HASH_SHA256_HEX_LEN];
    ev_queue_new_file_t rows[MAX_FILES];
};

int ev_api_error_set(ev_api_error_t *e, int rc, int status, const char *code, const char *fmt, ...)
{
    if (e->status != 0)
        return rc;
    va_list ap;
    e->status = status;
    snprintf(e->code, sizeof(e->code), "%s", code);
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return rc;
}

void ev_api_upload_new(ev_api_upload_t **out, const char *dir, const char *rel_prefix,
                       const ev_files_options_t *fopts)
{
    ev_api_upload_t *u = ev_calloc(1, sizeof(*u));
    u->dir = ev_strdup(dir);
    u->rel_prefix = ev_strdup(rel_prefix);
    u->fopts = *fopts;
    u->fopts.upload_dir = NULL;
    u->current = -1;
    for (size_t i = 0; i < MAX_FILES; i++)
        u->files[i].fd = -1;
    *out = u;
}

static void close_file(upfile_t *f)
{
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
}

void ev_api_upload_free(ev_api_upload_t *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->nfiles; i++) {
        upfile_t *f = &u->files[i];
        close_file(f);
        if (f->tmp_path)
            unlink(f->tmp_path);
        if (f->final_path && !u->kept)
            unlink(f->final_path);
        free(f->filename);
        free(f->tmp_path);
        free(f->final_path);
        free(f->rel_path);
    }
    free(u->title);
    free(u->description);
    free(u->priority);
    free(u->dir);
    free(u->rel_prefix);
    free(u);
}

const ev_api_error_t *ev_api_upload_error(const ev_api_upload_t *u)
{
    return &u->err;
}

size_t ev_api_upload_file_count(const ev_api_upload_t *u)
{
    return u->nfiles;
}

uint64_t ev_api_upload_bytes(const ev_api_upload_t *u)
{
    return u->bytes;
}

/* 32 random hex digits: names nobody can guess or collide with. */
static int random_name(char out[33])
{
    unsigned char r[16];
    if (ev_random_bytes(r, sizeof(r)) < 0)
        return EV_EIO;
    ev_hash_to_hex(out, r, sizeof(r));
    return 0;
}

static int start_file(ev_api_upload_t *u, ev_file_kind_t kind, const char *filename)
{
    char name[33];
    if (kind == EV_FILE_PDF && u->have_pdf)
        return ev_api_error_set(&u->err, EV_ELIMIT, 422, "too_many_files",
                                "at most one 'pdf' file may be sent");
    if (kind == EV_FILE_IMAGE && u->nimages >= u->fopts.max_images)
        return ev_api_error_set(&u->err, EV_ELIMIT, 422, "too_many_images",
                                "more than %d images; the limit is %d (MAX_IMAGES)",
                                u->fopts.max_images, u->fopts.max_images);
    EV_ASSERT(u->nfiles < MAX_FILES);
    if (random_name(name) < 0)
        return ev_api_error_set(&u->err, EV_EIO, 500, "internal", "cannot name a temporary file");
    upfile_t *f = &u->files[u->nfiles];
    f->kind = kind;
    f->filename = ev_db_clip_text(filename ? filename : "", EV_API_FILENAME_MAX);
    f->tmp_path = ev_asprintf("%s/.tmp-%s", u->dir, name);
    f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (f->fd < 0) {
        free(f->tmp_path);
        f->tmp_path = NULL;
        free(f->filename);
        f->filename = NULL;
        return ev_api_error_set(&u->err, EV_EIO, 500, "storage_unavailable",
                                "the upload could not be stored; try again later");
    }
    ev_hash_sha256_init(&f->hash);
    u->current = (int)u->nfiles++;
    if (kind == EV_FILE_PDF)
        u->have_pdf = true;
    else
        u->nimages++;
    return 0;
}

static int write_chunk(ev_api_upload_t *u, const char *data, size_t size)
{
    upfile_t *f = &u->files[u->current];
    int64_t limit = f->kind == EV_FILE_PDF ? u->fopts.pdf_max_bytes : u->fopts.image_max_bytes;
    if (f->size + size > (uint64_t)limit) {
        char lim[32];
        ev_files_format_size(lim, sizeof(lim), limit, true);
        return ev_api_error_set(&u->err, EV_ETOOBIG, 413, "file_too_large",
                                "%s '%s' is larger than the limit of %s (%s)",
                                f->kind == EV_FILE_PDF ? "PDF" : "image", f->filename, lim,
                                f->kind == EV_FILE_PDF ? "PDF_MAX_BYTES" : "IMAGE_MAX_BYTES");
    }
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(f->fd, data + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return ev_api_error_set(&u->err, EV_EIO, 500, "storage_unavailable",
                                    "the upload could not be stored; try again later");
        done += (size_t)n;
    }
    ev_hash_sha256_update(&f->hash, data, size);
    f->size += size;
    return 0;
}

/* Appends to a text field kept in memory, refusing it past max bytes. */
static int append_text(ev_api_upload_t *u, const char *key, char **buf, size_t *len, size_t max,
                       const char *data, uint64_t off, size_t size)
{
    if (off == 0 && *buf)
        return ev_api_error_set(&u->err, EV_EINVAL, 422, "duplicate_field",
                                "the field '%s' was sent more than once", key);
    if (*len + size > max)
        return ev_api_error_set(&u->err, EV_ETOOBIG, 422, "field_too_long",
                                "the field '%s' is longer than %zu bytes", key, max);
    *buf = ev_realloc(*buf, *len + size + 1);
    memcpy(*buf + *len, data, size);
    *len += size;
    (*buf)[*len] = '\0';
    return 0;
}

static void end_current(ev_api_upload_t *u)
{
    if (u->current >= 0)
        close_file(&u->files[u->current]);
    u->current = -1;
}

/* A refused upload keeps nothing: every temporary file goes at once, not
 * when the request ends. */
static int purge(ev_api_upload_t *u, int rc)
{
    for (size_t i = 0; i < u->nfiles; i++) {
        upfile_t *f = &u->files[i];
        close_file(f);
        if (f->tmp_path)
            unlink(f->tmp_path);
        free(f->tmp_path);
        f->tmp_path = NULL;
    }
    u->current = -1;
    return rc;
}

static int field(ev_api_upload_t *u, const char *key, const char *filename, const char *data,
                 uint64_t off, size_t size);

int ev_api_upload_field(ev_api_upload_t *u, const char *key, const char *filename, const char *data,
                        uint64_t off, size_t size)
{
    if (u->err.status)
        return EV_EINVAL;
    int rc = field(u, key, filename, data, off, size);
    return rc < 0 ? purge(u, rc) : 0;
}

static int field(ev_api_upload_t *u, const char *key, const char *filename, const char *data,
                 uint64_t off, size_t size)
{
    int rc = 0;
    if (!key)
        key = "";
    u->bytes += size;
    bool is_pdf = strcmp(key, "pdf") == 0, is_image = strcmp(key, "image") == 0;
    if (is_pdf || is_image) {
        if (off == 0) {
            end_current(u);
            rc = start_file(u, is_pdf ? EV_FILE_PDF : EV_FILE_IMAGE, filename);
        } else if (u->current < 0) {
            rc = ev_api_error_set(&u->err, EV_EINVAL, 400, "malformed_body",
                                  "the multipart body is malformed");
        }
        if (rc == 0 && size > 0)
            rc = write_chunk(u, data, size);
        return rc;
    }
    end_current(u);
    if (strcmp(key, "title") == 0)
        return append_text(u, key, &u->title, &u->title_len, EV_API_TITLE_MAX, data, off, size);
    if (strcmp(key, "description") == 0)
        return append_text(u, key, &u->description, &u->description_len, EV_API_DESCRIPTION_MAX,
                           data, off, size);
    if (strcmp(key, "priority") == 0)
        return append_text(u, key, &u->priority, &u->priority_len, 11, data, off, size);
    char *shown = ev_db_clip_text(key, 64);
    rc = ev_api_error_set(&u->err, EV_EINVAL, 422, "unknown_field",
                          "unknown field '%s' (accepted: title, description, priority, pdf, "
                          "image)",
                          shown);
    free(shown);
    return rc;
}

static bool valid_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = ev_utf8_decode(p + i, n - i, &cp);
        if (k == 0 || cp == 0)
            return false;
        i += k;
    }
    return true;
}

static int check_text(ev_api_upload_t *u)
{
    if (!u->title || u->title_len == 0)
        return ev_api_error_set(&u->err, EV_EINVAL, 422, "missing_title",
                                "a submission needs a non-empty 'title' field");
    if (!valid_utf8(u->title, u->title_len) ||
        (u->description && !valid_utf8(u->description, u->description_len)))
        return ev_api_error_set(&u->err, EV_EINVAL, 422, "invalid_text",
                                "'title' and 'description' must be UTF-8 text");
    if (u->priority) {
        char *end = NULL;
        errno = 0;
        long v = strtol(u->priority, &end, 10);
        if (u->priority_len == 0 || errno || *end || v < -1000000 || v > 1000000)
            return ev_api_error_set(&u->err, EV_EINVAL, 422, "invalid_priority",
                                    "'priority' must be a whole number from -1000000 to 1000000");
        u->priority_value = (int)v;
    }
    return 0;
}

/* The real type of one received file, judged by the pipeline's rule. */
static int check_type(ev_api_upload_t *u, ev_files_t *files, upfile_t *f)
{
    size_t cap = (size_t)EV_MIN(f->size, (uint64_t)EV_FILES_MIB);
    unsigned char *head = ev_malloc(cap ? cap : 1);
    char mime[EV_FILES_MIME_MAX];
    char *reason = NULL;
    int rc = 0;
    int fd = open(f->tmp_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t n = fd >= 0 ? pread(fd, head, cap, 0) : -1;
    if (fd >= 0)
        close(fd);
    if (n < 0 || (size_t)n != cap || ev_files_classify(files, mime, sizeof(mime), head, cap) < 0) {
        rc = ev_api_error_set(&u->err, EV_EIO, 500, "internal",
                              "the file type of '%s' could not be determined", f->filename);
    } else if (ev_files_check_type(f->kind, f->filename[0] ? f->filename : NULL, mime,
                                   (size_t)f->size, &reason) < 0) {
        rc = ev_api_error_set(&u->err, EV_ETYPE, 422, "wrong_file_type", "%s", reason);
    }
    free(reason);
    free(head);
    return rc;
}

static void compute_request_hash(ev_api_upload_t *u)
{
    ev_hash_sha256_t h;
    uint8_t digest[EV_HASH_SHA256_LEN];
    char prio[16];
    snprintf(prio, sizeof(prio), "%d", u->priority_value);
    ev_hash_sha256_init(&h);
    /* Each part ends with a NUL, and "description absent" differs from
     * "description empty", so no two different requests share a digest. */
    ev_hash_sha256_update(&h, u->title, u->title_len + 1);
    ev_hash_sha256_update(&h, u->description ? "d" : "-", 1);
    if (u->description)
        ev_hash_sha256_update(&h, u->description, u->description_len + 1);
    ev_hash_sha256_update(&h, prio, strlen(prio) + 1);
    for (size_t i = 0; i < u->nfiles; i++) {
        upfile_t *f = &u->files[i];
        const char *kind = ev_files_kind_name(f->kind);
        ev_hash_sha256_update(&h, kind, strlen(kind) + 1);
        ev_hash_sha256_update(&h, f->filename, strlen(f->filename) + 1);
        ev_hash_sha256_update(&h, f->sha, sizeof(f->sha));
    }
    ev_hash_sha256_final(&h, digest);
    ev_hash_to_hex(u->request_hash, digest, sizeof(digest));
}

int ev_api_upload_finish(ev_api_upload_t *u, ev_files_t *files)
{
    if (u->err.status)
        return purge(u, EV_EINVAL);
    end_current(u);
    int rc = check_text(u);
    for (size_t i = 0; i < u->nfiles && rc == 0; i++) {
        upfile_t *f = &u->files[i];
        uint8_t digest[EV_HASH_SHA256_LEN];
        ev_hash_sha256_final(&f->hash, digest);
        ev_hash_to_hex(f->sha, digest, sizeof(digest));
        if (files)
            rc = check_type(u, files, f);
    }
    if (rc < 0)
        return purge(u, rc);
    compute_request_hash(u);
    return 0;
}

const char *ev_api_upload_request_hash(const ev_api_upload_t *u)
{
    return u->request_hash;
}

int ev_api_upload_store(ev_api_upload_t *u, ev_queue_new_submission_t *sub)
{
    static const char *const ext[] = {".pdf", ".img"};
    for (size_t i = 0; i < u->nfiles; i++) {
        upfile_t *f = &u->files[i];
        char name[33];
        int fd = open(f->tmp_path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        bool ok = fd >= 0 && fdatasync(fd) == 0 && random_name(name) == 0;
        if (fd >= 0)
            close(fd);
        if (ok) {
            f->rel_path = ev_asprintf("%s%s%s", u->rel_prefix, name, ext[f->kind]);
            f->final_path = ev_asprintf("%s/%s%s", u->dir, name, ext[f->kind]);
            ok = rename(f->tmp_path, f->final_path) == 0;
            if (!ok) {
                free(f->final_path);
                f->final_path = NULL;
            }
        }
        if (!ok)
            return ev_api_error_set(&u->err, EV_EIO, 500, "storage_unavailable",
                                    "the upload could not be stored; try again later");
        free(f->tmp_path);
        f->tmp_path = NULL;
        u->rows[i] = (ev_queue_new_file_t){ev_files_kind_name(f->kind), f->filename, f->rel_path};
    }
    int dfd = open(u->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    bool synced = dfd >= 0 && fsync(dfd) == 0;
    if (dfd >= 0)
        close(dfd);
    if (!synced)
        return ev_api_error_set(&u->err, EV_EIO, 500, "storage_unavailable",
                                "the upload could not be stored; try again later");
    sub->title = u->title;
    sub->description = u->description;
    sub->priority = u->priority_value;
    sub->files = u->rows;
    sub->nfiles = u->nfiles;
    sub->request_hash = u->request_hash;
    return 0;
}

void ev_api_upload_keep(ev_api_upload_t *u)
{
    u->kept = true;
}

/* ---- POST /v1/events ---- */

void ev_api_event_req_clear(ev_api_event_req_t *r)
{
    free(r->name);
    free(r->theme);
    free(r->rules);
    free(r->webhook_url);
    memset(r, 0, sizeof(*r));
}

static int take_string(json_object *v, const char *key, size_t max, bool required, char **out,
                       ev_api_error_t *e)
{
    if (!v)
        return required
                   ? ev_api_error_set(e, EV_EINVAL, 422, "missing_field", "'%s' is required", key)
                   : 0;
    if (json_object_is_type(v, json_type_null) && !required)
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return ev_api_error_set(e, EV_EINVAL, 422, "invalid_field", "'%s' must be a string", key);
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    if ((required && n == 0) || n > max || strlen(s) != n || !valid_utf8(s, n))
        return ev_api_error_set(e, EV_EINVAL, 422, "invalid_field",
                                "'%s' must be UTF-8 text of %d to %zu bytes", key, required ? 1 : 0,
                                max);
    *out = ev_strdup(s);
    return 0;
}

static int take_bool(json_object *v, const char *key, bool *out, ev_api_error_t *e)
{
    if (!v)
        return 0;
    if (!json_object_is_type(v, json_type_boolean))
        return ev_api_error_set(e, EV_EINVAL, 422, "invalid_field", "'%s' must be true or false",
                                key);
    *out = json_object_get_boolean(v);
    return 0;
}

static int event_members(json_object *root, bool allow_private, ev_api_event_req_t *out,
                         ev_api_error_t *e)
{
    static const char *const known[] = {"name",        "theme",         "rules",
                                        "require_pdf", "require_image", "webhook_url"};
    json_object_object_foreach(root, key, val)
    {
        (void)val;
        bool ok = false;
        for (size_t i = 0; i < EV_ARRAY_LEN(known); i++)
            ok |= strcmp(key, known[i]) == 0;
        if (!ok) {
            char *shown = ev_db_clip_text(key, 64);
            int rc = ev_api_error_set(e, EV_EINVAL, 422, "unknown_field",
                                      "unknown member '%s' (accepted: name, theme, rules, "
                                      "require_pdf, require_image, webhook_url)",
                                      shown);
            free(shown);
            return rc;
        }
    }
    json_object *v = NULL;
    int rc = 0;
#define MEMBER(k) (json_object_object_get_ex(root, k, &v) ? v : NULL)
    rc = take_string(MEMBER("name"), "name", 200, true, &out->name, e);
    if (rc == 0)
        rc = take_string(MEMBER("theme"), "theme", 2000, true, &out->theme, e);
    if (rc == 0)
        rc = take_string(MEMBER("rules"), "rules", 20000, false, &out->rules, e);
    if (rc == 0)
        rc = take_bool(MEMBER("require_pdf"), "require_pdf", &out->require_pdf, e);
    if (rc == 0)
        rc = take_bool(MEMBER("require_image"), "require_image", &out->require_image, e);
    if (rc == 0)
        rc = take_string(MEMBER("webhook_url"), "webhook_url", 2000, false, &out->webhook_url, e);
#undef MEMBER
    char why[200];
    if (rc == 0 && out->webhook_url &&
        ev_webhook_url_check(out->webhook_url, allow_private, why, sizeof(why)) < 0)
        rc = ev_api_error_set(e, EV_EINVAL, 422, "invalid_webhook_url", "webhook_url %s", why);
    return rc;
}

int ev_api_parse_event(const char *body, size_t len, bool allow_private, ev_api_event_req_t *out,
                       ev_api_error_t *e)
{
    memset(out, 0, sizeof(*out));
    if (len > EV_API_JSON_MAX)
        return ev_api_error_set(e, EV_ETOOBIG, 413, "body_too_large",
                                "the JSON body is larger than %d bytes", EV_API_JSON_MAX);
    json_tokener *tok = json_tokener_new_ex(32);
    json_object *root = json_tokener_parse_ex(tok, body ? body : "", (int)len);
    bool complete = root && json_tokener_get_error(tok) == json_tokener_success;
    /* Only white space may follow the value. */
    for (size_t i = complete ? json_tokener_get_parse_end(tok) : len; i < len; i++)
        complete &= body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t';
    json_tokener_free(tok);
    int rc;
    if (!complete)
        rc = ev_api_error_set(e, EV_EPARSE, 400, "malformed_json", "the body is not valid JSON");
    else if (!json_object_is_type(root, json_type_object))
        rc = ev_api_error_set(e, EV_EINVAL, 422, "invalid_body", "the body must be a JSON object");
    else
        rc = event_members(root, allow_private, out, e);
    json_object_put(root);
    if (rc < 0)
        ev_api_event_req_clear(out);
    return rc;
}
