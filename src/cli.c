/*
 * cli.c - the commands behind `event-validator migrate|serve|event add|submit|show`.
 *
 * What: each ev_cli_* function is one command of SPEC §2, given the loaded
 * configuration and already-parsed arguments (argv handling is main.c's job).
 * Commands that write do so in one transaction, after every input has been
 * checked, so a refused command leaves no trace. Errors come back as one line
 * in `err`; main prints it and chooses the exit status.
 *
 * How: each command opens its own ev_db_t. `submit` stats every file and
 * checks its size against its limit before reading it, reads it fully into
 * memory, then inserts the submission and the files (bytea, binary
 * parameters) in one transaction; the queue's NOTIFY trigger fires at commit,
 * so a worker never sees a submission without its files. `serve` wires the
 * pipeline into the worker pool and waits for the shutdown request.
 *
 * Threads: everything runs on the main thread; `serve` starts the signal
 * thread and the pool (which owns its threads) and stops them before
 * returning. No locks here.
 */
#include "ev/cli.h"

#include "ev/api_server.h"
#include "ev/cluster.h"
#include "ev/cluster_state.h"
#include "ev/console.h"
#include "ev/dashboard.h"
#include "ev/db.h"
#include "ev/error.h"
#include "ev/http.h"
#include "ev/log.h"
#include "ev/migrate.h"
#include "ev/pipeline.h"
#include "ev/stats.h"
#include "ev/stats_server.h"
#include "ev/pool.h"
#include "ev/preflight.h"
#include "ev/providers.h"
#include "ev/spend.h"
#include "ev/threads.h"
#include "ev/tokens.h"
#include "ev/utf8.h"
#include "ev/util.h"
#include "ev/webhook.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Longest filename stored for an uploaded file (its basename). */
#define FILENAME_MAX_BYTES 255

static int connect_db(ev_db_t **db, const ev_config_t *cfg, char *err, size_t errlen)
{
    char why[512];
    int rc = ev_db_connect(db, cfg->database_url, why, sizeof(why));

    if (rc != 0)
        ev_set_error(err, errlen, "database unreachable: %s", why);
    return rc;
}

/* Maps a failed statement to one line; a lost connection says so plainly. */
static int db_fail(ev_db_t *db, int rc, const char *what, char *err, size_t errlen)
{
    if (rc == EV_EDBCONN)
        ev_set_error(err, errlen, "database unreachable while %s: %s", what, ev_db_error(db));
    else
        ev_set_error(err, errlen, "database error while %s: %s", what, ev_db_error(db));
    return rc;
}

/* ------------------------------------------------------------------------
 * migrate
 * ---------------------------------------------------------------------- */

int ev_cli_migrate(const ev_config_t *cfg, int *applied, char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    char why[512] = "";
    int rc;

    if (applied)
        *applied = 0;
    rc = connect_db(&db, cfg, err, errlen);
    if (rc != 0)
        goto out;
    rc = ev_migrate_run(db, applied, why, sizeof(why));
    if (rc != 0)
        ev_set_error(err, errlen, "%s", why[0] ? why : ev_strerror(rc));
out:
    ev_db_free(db);
    return rc;
}

/* ------------------------------------------------------------------------
 * event add
 * ---------------------------------------------------------------------- */

/* The address a local client uses to reach a server bound to `bind`: the
 * wildcard addresses mean loopback; IPv6 literals need brackets in a URL. */
static void probe_host(const char *bind, char *out, size_t len)
{
    if (bind == NULL || bind[0] == '\0' || strcmp(bind, "0.0.0.0") == 0)
        snprintf(out, len, "127.0.0.1");
    else if (strcmp(bind, "::") == 0)
        snprintf(out, len, "[::1]");
    else if (strchr(bind, ':') != NULL)
        snprintf(out, len, "[%s]", bind);
    else
        snprintf(out, len, "%s", bind);
}

int ev_cli_healthcheck(const ev_config_t *cfg, bool ready, int timeout_ms, char *err, size_t errlen)
{
    const char *path = ready ? "/readyz" : "/livez";
    ev_http_response_t resp;
    ev_http_t *h = NULL;
    char host[80], url[160];
    int rc;

    ev_http_response_init(&resp);
    if (cfg->stats_port == 0) {
        ev_set_error(err, errlen, "STATS_PORT is 0 (a random port): there is no port to ask");
        rc = EV_EINVAL;
        goto out;
    }
    probe_host(cfg->stats_addr, host, sizeof(host));
    snprintf(url, sizeof(url), "http://%s:%d%s", host, cfg->stats_port, path);
    rc = ev_http_new(&h);
    if (rc == 0) {
        ev_http_request_t req = {.url = url, .timeout_ms = timeout_ms > 0 ? timeout_ms : 2000};
        rc = ev_http_get(h, &req, &resp);
    }
    if (rc != 0) {
        ev_set_error(err, errlen, "%s: %s", url, resp.error[0] ? resp.error : ev_strerror(rc));
    } else if (resp.status != 200) {
        ev_set_error(err, errlen, "%s answered %d", url, resp.status);
        rc = EV_EHTTP;
    }
out:
    ev_http_response_free(&resp);
    ev_http_free(h);
    return rc;
}

int ev_cli_event_add(const ev_config_t *cfg, const ev_cli_event_args_t *a, int64_t *id, char *err,
                     size_t errlen)
{
    ev_db_t *db = NULL;
    PGresult *res = NULL;
    const char *params[6];
    int rc;

    *id = 0;
    if (a->name == NULL || a->name[0] == '\0' || a->theme == NULL || a->theme[0] == '\0') {
        ev_set_error(err, errlen, "an event needs a non-empty name and theme");
        rc = EV_EINVAL;
        goto out;
    }
    rc = connect_db(&db, cfg, err, errlen);
    if (rc != 0)
        goto out;
    params[0] = a->name;
    params[1] = a->theme;
    params[2] = a->rules;
    params[3] = a->require_pdf ? "true" : "false";
    params[4] = a->require_image ? "true" : "false";
    params[5] = a->budget_usd;
    /* ON CONFLICT tells a taken name apart from any other unique violation. */
    rc = ev_db_exec(
        db, &res,
        "INSERT INTO events (name, theme, rules, require_pdf, require_image, budget_usd) "
        "VALUES ($1, $2, $3, $4::boolean, $5::boolean, $6::numeric) "
        "ON CONFLICT (name) DO NOTHING RETURNING id",
        6, params);
    if (rc != 0) {
        db_fail(db, rc, "creating the event", err, errlen);
        goto out;
    }
    if (PQntuples(res) == 0) {
        ev_set_error(err, errlen, "an event named '%s' already exists", a->name);
        rc = EV_EEXIST;
        goto out;
    }
    *id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
out:
    PQclear(res);
    ev_db_free(db);
    return rc;
}

/* ------------------------------------------------------------------------
 * submit
 * ---------------------------------------------------------------------- */

typedef struct upload {
    const char *path;
    const char *kind; /* "pdf" or "image" */
    unsigned char *data;
    size_t len;
} upload_t;

/* True when s has nothing but white space (Unicode spaces included) or is empty. */
static bool is_blank(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = ev_utf8_decode(p + i, n - i, &cp);
        if (l == 0)
            return false;
        bool space = (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 ||
                     cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200b) || cp == 0x2028 ||
                     cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000 || cp == 0xfeff;
        if (!space)
            return false;
        i += l;
    }
    return true;
}

/*
 * Reads `path` fully, refusing it before reading when it is not a regular
 * file or larger than `max` (named by `limit_name` in the message). The size
 * is enforced again while reading, in case the file grows meanwhile.
 */
static int read_upload(upload_t *u, int64_t max, const char *limit_name, char *err, size_t errlen)
{
    struct stat st;
    size_t cap, got = 0;
    ssize_t n;
    int fd, rc;

    u->data = NULL;
    u->len = 0;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
     * writer forever; it is refused below as not a regular file. */
    fd = open(u->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        ev_set_error(err, errlen, "cannot read %s: %s", u->path, strerror(errno));
        rc = EV_EIO;
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        ev_set_error(err, errlen, "cannot read %s: %s", u->path, strerror(errno));
        rc = EV_EIO;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        ev_set_error(err, errlen, "cannot read %s: not a regular file", u->path);
        rc = EV_EIO;
        goto out;
    }
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    if ((int64_t)st.st_size > max) {
        ev_set_error(err, errlen, "%s is too large: %lld bytes, the limit is %lld (%s)", u->path,
                     (long long)st.st_size, (long long)max, limit_name);
        rc = EV_ETOOBIG;
        goto out;
    }
    /* One spare byte detects a file that grew past the limit after fstat. */
    cap = (size_t)st.st_size + 1;
    u->data = ev_malloc(cap);
    for (;;) {
        n = read(fd, u->data + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ev_set_error(err, errlen, "cannot read %s: %s", u->path, strerror(errno));
            rc = EV_EIO;
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
        if (got == cap) {
            if ((int64_t)got > max) {
                ev_set_error(err, errlen, "%s is too large: more than %lld bytes (%s)", u->path,
                             (long long)max, limit_name);
                rc = EV_ETOOBIG;
                goto out;
            }
            cap = EV_MIN((size_t)max + 1, cap * 2);
            u->data = ev_realloc(u->data, cap);
        }
    }
    u->len = got;
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        free(u->data);
        u->data = NULL;
    }
    return rc;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash ? slash + 1 : path;
}

static int insert_file(ev_db_t *db, const char *submission_id, const upload_t *u)
{
    PGresult *res;
    char *filename = ev_db_clip_text(base_name(u->path), FILENAME_MAX_BYTES);
    const char *values[4] = {submission_id, u->kind, filename, (const char *)u->data};
    /* An empty file still needs a non-NULL pointer to be sent as '' rather
     * than SQL NULL (which the one-source constraint would refuse). */
    const char *empty = "";
    int lengths[4] = {0, 0, 0, (int)u->len};
    int formats[4] = {0, 0, 0, 1};
    int rc;

    if (values[3] == NULL)
        values[3] = empty;
    if (PQstatus(ev_db_conn(db)) != CONNECTION_OK) {
        rc = EV_EDBCONN;
        goto out;
    }
    /* ev_db_exec only sends text; the file goes as one binary parameter. */
    res = PQexecParams(ev_db_conn(db),
                       "INSERT INTO submission_files (submission_id, kind, filename, content) "
                       "VALUES ($1::bigint, $2, $3, $4::bytea)",
                       4, NULL, values, lengths, formats, 0);
    rc = PQresultStatus(res) == PGRES_COMMAND_OK     ? 0
         : PQstatus(ev_db_conn(db)) != CONNECTION_OK ? EV_EDBCONN
                                                     : EV_EDB;
    PQclear(res);
out:
    free(filename);
    return rc;
}

static void free_uploads(upload_t *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(u[i].data);
    free(u);
}

int ev_cli_submit(const ev_config_t *cfg, const ev_cli_submit_args_t *a, int64_t *id, char *err,
                  size_t errlen)
{
    ev_db_t *db = NULL;
    PGresult *res = NULL;
    upload_t *uploads = NULL;
    size_t nuploads = 0;
    bool in_tx = false;
    char event_id[32], priority[16], sub_id[32];
    const char *params[4];
    int rc;

    *id = 0;
    if (a->title == NULL || is_blank(a->title)) {
        ev_set_error(err, errlen, "a submission needs a title that is not only blank space");
        rc = EV_EINVAL;
        goto out;
    }
    if (a->nimages > (size_t)cfg->max_images) {
        ev_set_error(err, errlen, "too many images: %zu, the limit is %d (MAX_IMAGES)", a->nimages,
                     cfg->max_images);
        rc = EV_ELIMIT;
        goto out;
    }

    /* Every file is read before the database is touched. */
    uploads = ev_calloc(a->nimages + 1, sizeof(*uploads));
    if (a->pdf) {
        uploads[nuploads] = (upload_t){a->pdf, "pdf", NULL, 0};
        rc = read_upload(&uploads[nuploads], cfg->pdf_max_bytes, "PDF_MAX_BYTES", err, errlen);
        if (rc != 0)
            goto out;
        nuploads++;
    }
    for (size_t i = 0; i < a->nimages; i++) {
        uploads[nuploads] = (upload_t){a->images[i], "image", NULL, 0};
        rc = read_upload(&uploads[nuploads], cfg->image_max_bytes, "IMAGE_MAX_BYTES", err, errlen);
        if (rc != 0)
            goto out;
        nuploads++;
    }

    rc = connect_db(&db, cfg, err, errlen);
    if (rc != 0)
        goto out;
    rc = ev_db_exec(db, NULL, "BEGIN", 0, NULL);
    if (rc != 0) {
        db_fail(db, rc, "starting the transaction", err, errlen);
        goto out;
    }
    in_tx = true;

    /* KEY SHARE keeps the event from being deleted before we commit. */
    snprintf(event_id, sizeof(event_id), "%" PRId64, a->event_id);
    params[0] = event_id;
    rc =
        ev_db_exec(db, &res, "SELECT 1 FROM events WHERE id = $1::bigint FOR KEY SHARE", 1, params);
    if (rc != 0) {
        db_fail(db, rc, "looking up the event", err, errlen);
        goto out;
    }
    if (PQntuples(res) == 0) {
        ev_set_error(err, errlen, "event %" PRId64 " does not exist", a->event_id);
        rc = EV_ENOTFOUND;
        goto out;
    }
    PQclear(res);
    res = NULL;

    snprintf(priority, sizeof(priority), "%d", a->priority);
    params[1] = a->title;
    params[2] = a->description;
    params[3] = priority;
    rc = ev_db_exec(db, &res,
                    "INSERT INTO submissions (event_id, title, description, priority) "
                    "VALUES ($1::bigint, $2, $3, $4::int) RETURNING id",
                    4, params);
    if (rc != 0) {
        db_fail(db, rc, "storing the submission", err, errlen);
        goto out;
    }
    snprintf(sub_id, sizeof(sub_id), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    res = NULL;

    for (size_t i = 0; i < nuploads; i++) {
        rc = insert_file(db, sub_id, &uploads[i]);
        if (rc != 0) {
            ev_set_error(err, errlen, "%s while storing %s: %s",
                         rc == EV_EDBCONN ? "database unreachable" : "database error",
                         uploads[i].path, PQerrorMessage(ev_db_conn(db)));
            goto out;
        }
    }
    rc = ev_db_exec(db, NULL, "COMMIT", 0, NULL);
    in_tx = false;
    if (rc != 0) {
        db_fail(db, rc, "committing the submission", err, errlen);
        goto out;
    }
    *id = strtoll(sub_id, NULL, 10);
out:
    PQclear(res);
    if (in_tx)
        (void)ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
    ev_db_free(db);
    free_uploads(uploads, nuploads);
    return rc;
}

/* ------------------------------------------------------------------------
 * show
 * ---------------------------------------------------------------------- */

/* Copies field `key` of `from` into `to` (JSON null when absent). */
static void copy_field(json_object *to, json_object *from, const char *key)
{
    json_object *v = NULL;

    if (json_object_object_get_ex(from, key, &v) && v != NULL)
        json_object_object_add(to, key, json_object_get(v));
    else
        json_object_object_add(to, key, NULL);
}

static const char *const submission_fields[] = {
    "id",     "event_id", "title",      "description", "priority",
    "status", "attempts", "last_error", "created_at",  "updated_at",
};

static const char *const check_fields[] = {
    "verdict",       "score",      "reason",    "provider",   "model",
    "http_attempts", "latency_ms", "tokens_in", "tokens_out", "cached",
};

int ev_cli_show(const ev_config_t *cfg, int64_t sid, char **json, char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    PGresult *res = NULL;
    json_object *row = NULL, *out_obj = NULL, *checks = NULL;
    char idbuf[32];
    const char *params[1] = {idbuf};
    int rc;

    *json = NULL;
    rc = connect_db(&db, cfg, err, errlen);
    if (rc != 0)
        goto out;
    snprintf(idbuf, sizeof(idbuf), "%" PRId64, sid);
    /* row_to_json keeps column types (numbers, booleans, ISO timestamps). */
    rc =
        ev_db_exec(db, &res, "SELECT row_to_json(s)::text FROM submissions s WHERE id = $1::bigint",
                   1, params);
    if (rc != 0) {
        db_fail(db, rc, "reading the submission", err, errlen);
        goto out;
    }
    if (PQntuples(res) == 0) {
        ev_set_error(err, errlen, "submission %" PRId64 " does not exist", sid);
        rc = EV_ENOTFOUND;
        goto out;
    }
    row = json_tokener_parse(PQgetvalue(res, 0, 0));
    EV_ASSERT(row != NULL);
    out_obj = json_object_new_object();
    for (size_t i = 0; i < EV_ARRAY_LEN(submission_fields); i++)
        copy_field(out_obj, row, submission_fields[i]);
    json_object_put(row);
    row = NULL;
    PQclear(res);
    res = NULL;

    rc = ev_db_exec(db, &res,
                    "SELECT check_name, row_to_json(v)::text FROM validation_results v "
                    "WHERE submission_id = $1::bigint ORDER BY check_name",
                    1, params);
    if (rc != 0) {
        db_fail(db, rc, "reading the check results", err, errlen);
        goto out;
    }
    checks = json_object_new_object();
    for (int r = 0; r < PQntuples(res); r++) {
        json_object *check = json_object_new_object();

        row = json_tokener_parse(PQgetvalue(res, r, 1));
        EV_ASSERT(row != NULL);
        for (size_t i = 0; i < EV_ARRAY_LEN(check_fields); i++)
            copy_field(check, row, check_fields[i]);
        json_object_put(row);
        row = NULL;
        json_object_object_add(checks, PQgetvalue(res, r, 0), check);
    }
    json_object_object_add(out_obj, "checks", checks);
    checks = NULL;
    *json = ev_strdup(json_object_to_json_string_ext(out_obj, JSON_C_TO_STRING_PLAIN |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
    rc = 0;
out:
    json_object_put(checks);
    json_object_put(row);
    json_object_put(out_obj);
    PQclear(res);
    ev_db_free(db);
    return rc;
}

/* ------------------------------------------------------------------------
 * token create | list | revoke
 * ---------------------------------------------------------------------- */

int ev_cli_token_create(const ev_config_t *cfg, const char *name, bool admin, int64_t event_id,
                        char **token, int64_t *id, char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    int rc = connect_db(&db, cfg, err, errlen);

    *token = NULL;
    *id = 0;
    if (rc == 0)
        rc = ev_tokens_create(db, name, admin, event_id, token, id, err, errlen);
    ev_db_free(db);
    return rc;
}

int ev_cli_token_list(const ev_config_t *cfg, char **text, char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    int rc = connect_db(&db, cfg, err, errlen);

    *text = NULL;
    if (rc == 0 && (rc = ev_tokens_list(db, text)) != 0)
        db_fail(db, rc, "listing the tokens", err, errlen);
    ev_db_free(db);
    return rc;
}

int ev_cli_token_revoke(const ev_config_t *cfg, int64_t id, char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    int rc = connect_db(&db, cfg, err, errlen);

    if (rc == 0) {
        rc = ev_tokens_revoke(db, id);
        if (rc == EV_ENOTFOUND)
            ev_set_error(err, errlen, "token %" PRId64 " does not exist", id);
        else if (rc != 0)
            db_fail(db, rc, "revoking the token", err, errlen);
    }
    ev_db_free(db);
    return rc;
}

/* ------------------------------------------------------------------------
 * webhooks list | retry
 * ---------------------------------------------------------------------- */

int ev_cli_webhooks_list(const ev_config_t *cfg, bool failed_only, char **text, char *err,
                         size_t errlen)
{
    ev_db_t *db = NULL;
    int rc = connect_db(&db, cfg, err, errlen);

    *text = NULL;
    if (rc == 0 && (rc = ev_webhook_list(db, failed_only, text)) != 0)
        db_fail(db, rc, "listing the webhook deliveries", err, errlen);
    ev_db_free(db);
    return rc;
}

int ev_cli_webhooks_retry(const ev_config_t *cfg, int64_t id, char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    int rc = connect_db(&db, cfg, err, errlen);

    if (rc == 0) {
        rc = ev_webhook_retry(db, id);
        if (rc == EV_ENOTFOUND)
            ev_set_error(err, errlen,
                         "webhook delivery %" PRId64 " does not exist or was already delivered",
                         id);
        else if (rc != 0)
            db_fail(db, rc, "retrying the webhook delivery", err, errlen);
    }
    ev_db_free(db);
    return rc;
}

/* ------------------------------------------------------------------------
 * status
 * ---------------------------------------------------------------------- */

static const char *jstr(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v) || v == NULL)
        return "";
    return json_object_get_string(v);
}

static double jnum(json_object *o, const char *key)
{
    json_object *v = NULL;
    return json_object_object_get_ex(o, key, &v) && v ? json_object_get_double(v) : 0;
}

static void status_replicas(ev_stats_buf_t *b, json_object *st)
{
    json_object *reps = NULL, *old = NULL;
    json_object_object_get_ex(st, "replicas", &reps);
    ev_stats_buf_printf(b, "replicas: %d alive\n", (int)jnum(st, "replicas_alive"));
    for (size_t i = 0; reps && i < json_object_array_length(reps); i++) {
        json_object *r = json_object_array_get_idx(reps, i);
        json_object *alive = NULL;
        json_object_object_get_ex(r, "alive", &alive);
        ev_stats_buf_printf(b, "  %-40s %-5s version %-8s pid %-7s heartbeat %.1f s ago\n",
                            jstr(r, "id"), json_object_get_boolean(alive) ? "alive" : "dead",
                            jstr(r, "version"), jstr(r, "pid"), jnum(r, "heartbeat_age_s"));
    }
    json_object_object_get_ex(st, "unregistered_lease_owners", &old);
    if (old && json_object_array_length(old) > 0)
        ev_stats_buf_printf(b, "  not coordinating (older version, limits of their own): %s\n",
                            json_object_to_json_string(old));
}

static void status_provider(ev_stats_buf_t *b, const char *name, json_object *p)
{
    json_object *dis = NULL;
    json_object_object_get_ex(p, "disabled", &dis);
    ev_stats_buf_printf(b, "  %s: breaker %s", name, jstr(p, "breaker"));
    if (jnum(p, "open_remaining_s") > 0)
        ev_stats_buf_printf(b, " for %.0f s (%s)", jnum(p, "open_remaining_s"),
                            jstr(p, "breaker_reason"));
    if (jstr(p, "probe_owner")[0])
        ev_stats_buf_printf(b, ", probe by %s", jstr(p, "probe_owner"));
    if (jnum(p, "rate_per_min") > 0)
        ev_stats_buf_printf(b, "; rate %.1f/min in force (ceiling %.1f)", jnum(p, "rate_per_min"),
                            jnum(p, "ceiling_per_min"));
    else
        ev_stats_buf_printf(b, "; no rate limit");
    if (jnum(p, "rpd_limit") > 0)
        ev_stats_buf_printf(b, "; today %.0f of %.0f requests", jnum(p, "day_count"),
                            jnum(p, "rpd_limit"));
    if (jnum(p, "pause_remaining_s") > 0)
        ev_stats_buf_printf(b, "; paused %.1f s more (%s)", jnum(p, "pause_remaining_s"),
                            jstr(p, "pause_reason"));
    if (json_object_get_boolean(dis))
        ev_stats_buf_printf(b, "; DISABLED (%s)", jstr(p, "disabled_reason"));
    if (jstr(p, "updated_by")[0])
        ev_stats_buf_printf(b, "; last change by %s", jstr(p, "updated_by"));
    ev_stats_buf_printf(b, "\n");
}

static char *status_text(json_object *st)
{
    ev_stats_buf_t b = {0};
    json_object *q = NULL, *prov = NULL;
    status_replicas(&b, st);
    json_object_object_get_ex(st, "queue", &q);
    ev_stats_buf_printf(&b, "queue:");
    json_object_object_foreach(q, k, v)
        ev_stats_buf_printf(&b, " %s %d", k, json_object_get_int(v));
    ev_stats_buf_printf(&b, "\nproviders (cluster-wide state; concurrency caps are each "
                            "replica's *_MAX_CONCURRENT, held together):\n");
    json_object_object_get_ex(st, "providers", &prov);
    json_object_object_foreach(prov, name, p) status_provider(&b, name, p);
    return b.data;
}

int ev_cli_status(const ev_config_t *cfg, bool json, char **text, char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    json_object *st = NULL;
    int rc;

    *text = NULL;
    rc = connect_db(&db, cfg, err, errlen);
    if (rc != 0)
        goto out;
    rc = ev_cluster_status_json(db, cfg->cluster_expire_s, &st);
    if (rc == EV_EDB && strcmp(ev_db_sqlstate(db), "42P01") == 0) {
        ev_set_error(err, errlen,
                     "the database has no cluster tables: run 'event-validator "
                     "migrate' first");
        rc = EV_EVERSION;
        goto out;
    }
    if (rc != 0) {
        db_fail(db, rc, "reading the cluster status", err, errlen);
        goto out;
    }
    if (json) {
        json_object *spend = NULL;
        rc = ev_console_spend_json(db, cfg->daily_spend_limit_usd, &spend);
        if (rc != 0) {
            db_fail(db, rc, "reading the spend", err, errlen);
            goto out;
        }
        json_object_object_add(st, "spend", spend);
        *text = ev_strdup(json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN));
    } else {
        /* Then money: what each provider and the costliest events spent. */
        ev_stats_buf_t b = {0};
        char *cluster = status_text(st);
        ev_stats_buf_printf(&b, "%s", cluster);
        free(cluster);
        rc = ev_console_spend_report(db, cfg->daily_spend_limit_usd, &b);
        if (rc != 0) {
            ev_stats_buf_free(&b);
            db_fail(db, rc, "reading the spend", err, errlen);
            goto out;
        }
        *text = b.data;
    }
out:
    json_object_put(st);
    ev_db_free(db);
    return rc;
}

/* ------------------------------------------------------------------------
 * serve
 * ---------------------------------------------------------------------- */

/* The pool's generic callbacks, adapted to the pipeline. */
static int pipe_worker_init(void **state, int index, void *ctx)
{
    ev_pipeline_worker_t *w = NULL;
    int rc = ev_pipeline_worker_new(&w, ctx, index);

    *state = w;
    return rc;
}

static int pipe_process(void *state, ev_db_t *db, const ev_job_t *job, const atomic_bool *stop,
                        void *ctx)
{
    (void)ctx;
    return ev_pipeline_process(state, db, job, stop);
}

static void pipe_worker_fini(void *state, void *ctx)
{
    (void)ctx;
    ev_pipeline_worker_free(state);
}

static void on_drained(void *ctx)
{
    (void)ctx;
    ev_shutdown_request(0);
}

/*
 * Refuses to serve a database that is unreachable or not migrated to this
 * binary's schema: workers would otherwise retry forever in the background
 * while the operator sees nothing but log lines.
 */
static int check_database(const ev_config_t *cfg, char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    PGresult *res = NULL;
    int latest = ev_migrations_count ? ev_migrations[ev_migrations_count - 1].version : 0;
    int have, rc;

    rc = connect_db(&db, cfg, err, errlen);
    if (rc != 0)
        goto out;
    rc = ev_db_exec(db, &res, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL);
    if (rc == EV_EDB && strcmp(ev_db_sqlstate(db), "42P01") == 0) {
        have = 0;
    } else if (rc != 0) {
        db_fail(db, rc, "checking the schema version", err, errlen);
        goto out;
    } else {
        have = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
    }
    if (have < latest) {
        ev_set_error(err, errlen,
                     "database schema is at version %d, this binary needs %d: run "
                     "'event-validator migrate' first",
                     have, latest);
        rc = EV_EVERSION;
        goto out;
    }
    rc = 0;
out:
    PQclear(res);
    ev_db_free(db);
    return rc;
}

/*
 * The stats HTTP server (SPEC §7) runs on its own libmicrohttpd threads with
 * its own database session; it is started before the pool so that a port
 * already in use stops `serve` before any work is claimed.
 */
/* Spend accounting reads the cluster's totals before the first call, so a
 * limit already reached today holds from the start. */
static int start_spend(ev_spend_t **spend, const ev_config_t *cfg, ev_stats_t *stats, char *err,
                       size_t errlen)
{
    ev_spend_options_t o = EV_SPEND_OPTIONS_INIT;
    o.database_url = cfg->database_url;
    o.daily_limit_usd = cfg->daily_spend_limit_usd;
    o.price_overrides = cfg->model_prices;
    o.stats = stats;
    return ev_spend_start(spend, &o, err, errlen);
}

static bool pipeline_ready(void *ctx)
{
    return ev_pipeline_ready(ctx);
}

static int start_stats_server(ev_stats_server_t **srv, ev_stats_t *stats, ev_spend_t *spend,
                              ev_pipeline_t *pipeline, ev_dashboard_t *dashboard,
                              const ev_config_t *cfg, char *err, size_t errlen)
{
    ev_stats_server_options_t so = EV_STATS_SERVER_OPTIONS_INIT;
    so.spend = spend;
    so.providers_ready = pipeline_ready;
    so.providers_ctx = pipeline;
    so.dashboard = dashboard;
    char why[256] = "";
    so.addr = cfg->stats_addr;
    so.port = cfg->stats_port;
    so.database_url = cfg->database_url;
    int rc = ev_stats_server_start(srv, stats, &so, why, sizeof(why));
    if (rc != 0) {
        ev_set_error(err, errlen, "cannot start the stats server on %s:%d: %s", cfg->stats_addr,
                     cfg->stats_port, why[0] ? why : ev_strerror(rc));
        return rc;
    }
    ev_log(EV_LOG_INFO, "stats server listening on %s:%d (/stats, /metrics, /healthz, /readyz)",
           cfg->stats_addr, ev_stats_server_port(*srv));
    return 0;
}

/*
 * The organisers' API (its own port, apart from the operators' stats port)
 * and the webhook sender. The API stores uploads beneath UPLOAD_DIR, so
 * without it the API stays off and says why; the sender always runs (it only
 * sends what the outbox holds).
 */
static int start_api(ev_api_server_t **api, ev_webhook_sender_t **hooks, const ev_config_t *cfg,
                     char *err, size_t errlen)
{
    ev_webhook_options_t wo = EV_WEBHOOK_OPTIONS_INIT;
    wo.database_url = cfg->database_url;
    wo.allow_private = cfg->webhook_allow_private;
    wo.timeout_ms = cfg->webhook_timeout_ms;
    wo.retry_base_ms = cfg->webhook_retry_base_ms;
    wo.retry_max_ms = cfg->webhook_retry_max_ms;
    wo.max_age_s = cfg->webhook_max_age_s;
    int rc = ev_webhook_sender_start(hooks, &wo);
    if (rc != 0) {
        ev_set_error(err, errlen, "cannot start the webhook sender: %s", ev_strerror(rc));
        return rc;
    }
    if (!cfg->api_enabled)
        return 0;
    if (!cfg->upload_dir) {
        ev_log(EV_LOG_WARN, "API not started: it stores uploads beneath UPLOAD_DIR, which is "
                            "unset (set UPLOAD_DIR, or API_ENABLED=false to silence this)");
        return 0;
    }
    ev_api_options_t ao;
    char why[256] = "";
    ev_api_options_from_config(&ao, cfg);
    rc = ev_api_server_start(api, &ao, why, sizeof(why));
    if (rc != 0) {
        ev_set_error(err, errlen, "cannot start the API on %s:%d: %s", cfg->api_addr, cfg->api_port,
                     why[0] ? why : ev_strerror(rc));
        return rc;
    }
    ev_log(EV_LOG_INFO,
           "API listening on %s:%d (uploads per token: %d/min, burst %d; idle timeout %d s; "
           "webhooks to private addresses %s)",
           cfg->api_addr, ev_api_server_port(*api), cfg->api_uploads_per_minute,
           cfg->api_upload_burst, cfg->api_idle_timeout_s,
           cfg->webhook_allow_private ? "allowed" : "refused");
    return 0;
}

/* The model lookups of `providers check`, bounded so a start never hangs. */
#define PREFLIGHT_TIMEOUT_MS 10000

/*
 * serve's start: asks each provider about every configured model and sets
 * aside those it says are gone (the router logs one line per model). A
 * rejected key, a model that could not be asked about and a check no model
 * is known to answer get one line each; serve goes on with what is left.
 */
static void preflight(const ev_config_t *cfg, ev_pipeline_t *pipeline)
{
    ev_http_t *http = NULL;
    ev_preflight_t *pf = ev_calloc(1, sizeof(*pf));
    if (ev_http_new(&http) != 0) {
        ev_log(EV_LOG_WARN, "preflight skipped: no HTTP handle");
        goto out;
    }
    ev_preflight_run(pf, cfg, http, EV_MIN(cfg->http_timeout_ms, PREFLIGHT_TIMEOUT_MS));
    bool rejected[EV_PROVIDER_COUNT] = {false};
    for (size_t i = 0; i < pf->n; i++) {
        const ev_preflight_row_t *r = &pf->rows[i];
        const ev_provider_ops_t *ops = ev_providers_get(r->provider);
        if (r->status == EV_MODEL_KEY_REJECTED && !rejected[r->provider]) {
            rejected[r->provider] = true;
            ev_log(EV_LOG_ERROR, "preflight: %s rejected the key (%s); check %s_API_KEY", ops->name,
                   r->message, ops->env);
        } else if (r->status == EV_MODEL_UNCHECKED) {
            ev_log(EV_LOG_WARN,
                   "preflight: could not ask %s about model %s (%s); assuming it "
                   "is usable",
                   ops->name, r->model, r->message);
        }
    }
    ev_preflight_apply(pf, ev_pipeline_availability(pipeline));
    for (int c = 0; c < EV_PREFLIGHT_CHECKS; c++) {
        if (pf->answer[c] < 0)
            ev_log(EV_LOG_ERROR, "preflight: no configured model is known to answer the %s check",
                   ev_preflight_check_name(c));
    }
    if (ev_preflight_ok(pf))
        ev_log(EV_LOG_INFO, "preflight: every check has a model (%zu models asked)", pf->n);
out:
    ev_http_free(http);
    free(pf);
}

int ev_cli_providers_check(const ev_config_t *cfg, char **text, bool *ok, char *err, size_t errlen)
{
    ev_http_t *http = NULL;
    ev_preflight_t *pf = NULL;
    int rc = 0;
    *text = NULL;
    *ok = false;
    if (!ev_config_any_provider(cfg)) {
        ev_set_error(err, errlen,
                     "no LLM provider configured: set GEMINI_API_KEY, GROQ_API_KEY "
                     "or OPENAI_COMPAT_API_KEY (or their _FILE forms)");
        rc = EV_EUNAVAIL;
        goto out;
    }
    rc = ev_http_new(&http);
    if (rc != 0) {
        ev_set_error(err, errlen, "cannot create an HTTP handle: %s", ev_strerror(rc));
        goto out;
    }
    pf = ev_calloc(1, sizeof(*pf));
    ev_preflight_run(pf, cfg, http, EV_MIN(cfg->http_timeout_ms, PREFLIGHT_TIMEOUT_MS));
    *text = ev_preflight_format(pf);
    *ok = ev_preflight_ok(pf);
out:
    free(pf);
    ev_http_free(http);
    return rc;
}

/*
 * Joins the cluster of every `serve` on this database (cluster.h): the
 * providers' limits, breakers and disabling become cluster-wide. The replica
 * id is the pool's lease owner id, so `status` can tell which claims belong
 * to which replica.
 */
static int join_cluster(ev_cluster_t **cluster, ev_pipeline_t *pipeline, ev_stats_t *stats,
                        const ev_config_t *cfg, const char *id, char *err, size_t errlen)
{
    ev_cluster_options_t co = EV_CLUSTER_OPTIONS_INIT;
    char why[512] = "";
    co.database_url = cfg->database_url;
    co.replica_id = id;
    co.heartbeat_ms = cfg->cluster_heartbeat_ms;
    co.expire_s = cfg->cluster_expire_s;
    co.keepalive_s = cfg->cluster_keepalive_s;
    int rc = ev_cluster_new(cluster, &co, why, sizeof(why));
    if (rc == 0)
        rc = ev_pipeline_attach_cluster(pipeline, *cluster);
    if (rc == 0)
        rc = ev_cluster_start(*cluster);
    if (rc != 0) {
        ev_set_error(err, errlen, "cannot join the cluster: %s", why[0] ? why : ev_strerror(rc));
        return rc;
    }
    ev_stats_set_cluster_probe(stats, ev_cluster_stats_probe, *cluster);
    ev_cluster_stats_t cs;
    ev_cluster_stats(*cluster, &cs);
    ev_log(EV_LOG_INFO, "joined the cluster as %s: %d replica(s) alive, limits are cluster-wide",
           id, cs.replicas_alive);
    return 0;
}

int ev_cli_serve(const ev_config_t *cfg, const ev_cli_serve_args_t *a, char *err, size_t errlen)
{
    ev_cluster_t *cluster = NULL;
    char owner[192];
    ev_pipeline_t *pipeline = NULL;
    ev_stats_t *stats = NULL;
    ev_stats_server_t *server = NULL;
    ev_api_server_t *api = NULL;
    ev_webhook_sender_t *hooks = NULL;
    ev_pool_t *pool = NULL;
    ev_spend_t *spend = NULL;
    ev_dashboard_t *dashboard = NULL;
    ev_dashboard_options_t dopts = EV_DASHBOARD_OPTIONS_INIT;
    ev_pool_options_t popts = EV_POOL_OPTIONS_INIT;
    ev_pool_callbacks_t cbs = {0};
    bool signals = false;
    int reason, rc;

    /* Before any thread: the replica id (the pool's lease owner, the cluster's
     * replica id) goes on every log line, so several replicas' logs tell apart. */
    ev_pool_make_owner(owner, sizeof(owner));
    ev_log_set_replica(owner);
    if (!ev_config_any_provider(cfg)) {
        ev_set_error(err, errlen,
                     "no LLM provider configured: set GEMINI_API_KEY or GROQ_API_KEY "
                     "(or GEMINI_API_KEY_FILE / GROQ_API_KEY_FILE)");
        rc = EV_EUNAVAIL;
        goto out;
    }
    rc = check_database(cfg, err, errlen);
    if (rc != 0)
        goto out;
    /* Only now, so that a refusal above stays the one line on stderr. */
    ev_config_log(cfg);
    ev_stats_options_t sopts = EV_STATS_OPTIONS_INIT;
    sopts.workers_configured = cfg->max_workers;
    sopts.budget_limit = cfg->max_api_calls_per_submission;
    ev_stats_new(&stats, &sopts);
    rc = ev_pipeline_new(&pipeline, cfg, stats);
    if (rc != 0) {
        ev_set_error(err, errlen, "cannot set up the validation pipeline: %s", ev_strerror(rc));
        goto out;
    }
    if (cfg->preflight)
        preflight(cfg, pipeline);
    if (!ev_pipeline_usable(pipeline)) {
        ev_set_error(err, errlen,
                     "every LLM provider was disabled by a configuration error (invalid API key "
                     "or model, see the log): fix the configuration and restart");
        rc = EV_EUNAVAIL;
        goto out;
    }
    rc = start_spend(&spend, cfg, stats, err, errlen);
    if (rc != 0)
        goto out;
    ev_pipeline_set_spend(pipeline, spend);
    rc = ev_signals_start();
    if (rc != 0) {
        ev_set_error(err, errlen, "cannot start the signal thread: %s", ev_strerror(rc));
        goto out;
    }
    signals = true;

    ev_pool_options_from_config(&popts, cfg);
    popts.owner = owner;
    popts.drain = a->drain;
    if (a->grace_ms >= 0)
        popts.grace_ms = a->grace_ms;
    cbs.worker_init = pipe_worker_init;
    cbs.process = pipe_process;
    cbs.worker_fini = pipe_worker_fini;
    cbs.on_drained = on_drained;
    cbs.ctx = pipeline;
    dopts.database_url = cfg->database_url;
    EV_ASSERT(ev_dashboard_new(&dashboard, &dopts) == 0);
    rc = start_stats_server(&server, stats, spend, pipeline, dashboard, cfg, err, errlen);
    if (rc != 0)
        goto out;
    rc = start_api(&api, &hooks, cfg, err, errlen);
    if (rc != 0)
        goto out;
    /* After the servers (a port in use stops serve first), before any work. */
    if (cfg->cluster_enabled) {
        rc = join_cluster(&cluster, pipeline, stats, cfg, owner, err, errlen);
        if (rc != 0)
            goto out;
    }
    rc = ev_pool_start(&pool, &popts, &cbs);
    if (rc != 0) {
        ev_set_error(err, errlen, "cannot start the worker pool: %s", ev_strerror(rc));
        goto out;
    }

    /* The main thread now only waits: for SIGTERM/SIGINT (signal thread) or
     * for the drained queue (on_drained). */
    while (!ev_shutdown_wait(1000)) {
        if (!ev_pipeline_usable(pipeline)) {
            ev_set_error(
                err, errlen,
                "every LLM provider was disabled by a configuration error (invalid API key "
                "or model, see the log): fix the configuration and restart");
            ev_log(EV_LOG_ERROR, "%s", err);
            rc = EV_EUNAVAIL;
            goto out;
        }
    }
    reason = ev_shutdown_reason();
    if (reason != 0)
        ev_log(EV_LOG_INFO, "received %s, shutting down gracefully",
               reason == SIGINT ? "SIGINT" : "SIGTERM");
    else
        ev_log(EV_LOG_INFO, "drain complete, shutting down");
    rc = 0;
out:
    ev_pool_free(pool);
    ev_api_server_stop(api);
    ev_webhook_sender_stop(hooks);
    ev_stats_server_stop(server);
    ev_dashboard_free(dashboard);
    ev_spend_stop(spend);
    if (stats)
        ev_stats_set_cluster_probe(stats, NULL, NULL);
    ev_cluster_free(cluster);
    ev_pipeline_free(pipeline);
    ev_stats_free(stats);
    if (signals)
        ev_signals_stop();
    return rc;
}
