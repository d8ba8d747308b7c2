/*
 * sandbox.h - parsing untrusted files in a short-lived, limited child process.
 *
 * Poppler, like every document parser, has no budget of its own: a small PDF
 * whose streams inflate to gigabytes keeps a thread at 100 % CPU and grows
 * the process without end. So the service never parses a PDF itself. It
 * hands the bytes to a *parse server*: the same binary re-executed once in a
 * hidden mode (EV_SANDBOX_SERVER_ARG) with an empty environment, so it holds
 * no API key. The server is single-threaded, which makes fork() in it safe;
 * it hands each parse to one of a few forked children, which limit
 * themselves before they read a byte of any file (address space through
 * RLIMIT_AS, no core files) and arm a fresh CPU budget for every file
 * (ITIMER_PROF, ms precision). A child serves a bounded number of files and
 * is then replaced, so the fork is paid rarely. The server kills a child
 * that outlives the wall-clock deadline, reaps every child (wait4: CPU and
 * peak memory from the kernel's accounting) and appends a status record of
 * its own after the child's answer. A child that runs out of a limit or
 * crashes takes only the file it was parsing with it.
 *
 * Threads: an ev_sandbox_t is shared by all worker threads; ev_sandbox_pdf()
 * may be called concurrently (each call has its own socket; a mutex guards
 * the control socket and the server's pid while a request is handed over or
 * the server restarted). Nothing here forks in the calling process: the
 * server is started with posix_spawn, safe from a multithreaded parent.
 * This module never logs.
 */
#ifndef EV_SANDBOX_H
#define EV_SANDBOX_H

#include "ev/pdf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* argv[1] that turns the binary into a parse server (see ev_sandbox_server_main). */
#define EV_SANDBOX_SERVER_ARG "__parse-server"

typedef struct ev_sandbox_options {
    const char *exe; /* the program to re-execute in server mode; NULL:
                        this process's own executable (/proc/self/exe) */
    int cpu_ms;      /* PARSE_CPU_MS: CPU time of one parse */
    int memory_mb;   /* PARSE_MEMORY_MB: address space one parse may add */
    int timeout_ms;  /* PARSE_TIMEOUT_MS: wall clock of one parse, then SIGKILL */
} ev_sandbox_options_t;

#define EV_SANDBOX_OPTIONS_INIT                                                                    \
    {                                                                                              \
        .exe = NULL, .cpu_ms = 2000, .memory_mb = 512, .timeout_ms = 10000                         \
    }

typedef struct ev_sandbox ev_sandbox_t;

/*
 * Starts the parse server. Returns 0 with a new *out, or EV_EIO when the
 * program cannot be started (*out NULL). opts->exe is copied.
 */
int ev_sandbox_new(ev_sandbox_t **out, const ev_sandbox_options_t *opts);
/* Stops the server (closing its socket makes it kill its children and exit)
 * and reaps it. Accepts NULL. No call may be in flight. */
void ev_sandbox_free(ev_sandbox_t *sb);

/* What the kernel accounted for one parse child. */
typedef struct ev_sandbox_usage {
    int64_t cpu_us;     /* user + system CPU time */
    int64_t max_rss_kb; /* peak resident set (ru_maxrss) */
    int64_t wall_ms;    /* from the request to the status record */
    bool limit_killed;  /* stopped by a limit: CPU, memory, or the deadline */
} ev_sandbox_usage_t;

/* A parsed PDF: what ev_pdf_open and ev_pdf_text found. */
typedef struct ev_sandbox_pdf {
    int pages;
    char *text; /* normalised text (see ev_pdf_text), free(); never NULL on 0 */
    size_t text_len;
    bool truncated; /* text cut at text_max or page_text_max */
    ev_sandbox_usage_t usage;
} ev_sandbox_pdf_t;

/*
 * Opens the PDF and extracts its text inside a child, bounded by the
 * sandbox's limits: at most `page_text_max` bytes of text per page and
 * `text_max` in total are kept as they are extracted.
 *
 * Returns 0 with *out filled (free out->text), or a negative code with
 * *reason a new string (free()) and out->usage still filled:
 *   the file's fault, a local `fail`:
 *     EV_ETYPE, EV_EPARSE, EV_ELIMIT  as ev_pdf_open (encrypted, damaged,
 *                 too many pages);
 *     EV_ELIMIT   also past the CPU or memory limit ("PDF needs more than
 *                 2 s of processing; it may be malformed or built to exhaust
 *                 the validator"), with usage.limit_killed;
 *     EV_EPARSE   also when the parser crashed (a signal);
 *   not the file's fault, an `error` worth a retry:
 *     EV_ETIMEOUT the wall-clock deadline passed before the CPU limit (the
 *                 machine was too busy), usage.limit_killed set;
 *     EV_EIO      the parse server could not be reached or answered nonsense.
 * Thread-safe.
 */
int ev_sandbox_pdf(ev_sandbox_t *sb, ev_sandbox_pdf_t *out, const void *data, size_t len,
                   int max_pages, size_t text_max, size_t page_text_max, char **reason);

/* Frees out->text and clears *out. Accepts NULL. */
void ev_sandbox_pdf_clear(ev_sandbox_pdf_t *out);

/*
 * The server's main: `argv[1]` is EV_SANDBOX_SERVER_ARG, argv[2..4] the CPU
 * ms, memory MiB and timeout ms; the control socket is fd 3. Serves until
 * that socket closes, then kills its children and returns the exit status.
 * Call it first thing in main() (before threads, before the configuration:
 * the server needs neither).
 */
int ev_sandbox_server_main(int argc, char **argv);

#endif
