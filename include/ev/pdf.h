/*
 * pdf.h - opening a submitted PDF locally and extracting its text (SPEC §5).
 *
 * Local PDF checks cost no API call: the PDF must open (not password
 * protected, not damaged or truncated) and have at most PDF_MAX_PAGES pages.
 * The extracted text feeds the theme check and the PDF check on Groq (which
 * takes no PDF), so it is bounded, whitespace-normalised, valid UTF-8 and
 * free of NUL and control characters (safe for JSON and a Postgres text
 * column).
 *
 * Built on poppler-glib. What we rely on for threads: poppler's global state
 * (GlobalParams) is created and destroyed under poppler's own mutex
 * (GlobalParamsIniter, poppler >= 0.86), GObject type registration is
 * thread-safe, and separate PopplerDocument objects share nothing mutable, so
 * different threads may each open and use their own documents concurrently.
 * A single ev_pdf_t is NOT thread-safe: use it from one thread at a time.
 * This module never logs; poppler's own diagnostics go to GLib's log at
 * levels GLib does not print by default.
 */
#ifndef EV_PDF_H
#define EV_PDF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ev_pdf_options {
    int max_pages; /* PDF_MAX_PAGES: more pages is a fail */
} ev_pdf_options_t;

#define EV_PDF_OPTIONS_INIT                                                                        \
    {                                                                                              \
        .max_pages = 100                                                                           \
    }

typedef struct ev_pdf ev_pdf_t;

/*
 * Opens a PDF from memory and runs the local checks. The bytes are NOT
 * copied: `data` must stay valid and unchanged until ev_pdf_free.
 * Returns 0 with a new *out, or a negative code with *out NULL and *reason a
 * new string (free with free()):
 *   EV_ETYPE   "PDF is encrypted (password protected)";
 *   EV_EPARSE  "PDF is damaged or truncated: <short reason>", e.g. "the
 *              end-of-file marker is missing (the file was cut short)";
 *   EV_ELIMIT  "PDF has 150 pages, limit is 100".
 * All three are a local `fail`. On success *reason is NULL.
 */
int ev_pdf_open(ev_pdf_t **out, const void *data, size_t len, const ev_pdf_options_t *opts,
                char **reason);

/*
 * Keeps poppler's global state (GlobalParams) alive for the rest of the
 * process by opening one tiny built-in document and never closing it;
 * otherwise poppler rebuilds that state whenever a document opens while no
 * other is open (about 1 ms of CPU per PDF). ev_pdf_open() calls it; main
 * may call it earlier. Thread-safe (pthread_once); later calls do nothing
 * and return the first result. Returns 0, or EV_EPARSE when poppler could
 * not open the document (PDFs still work, only slower). The document is a
 * deliberate process-lifetime allocation ("still reachable" in valgrind).
 */
int ev_pdf_global_init(void);

/* Frees the document (g_object_unref / g_bytes_unref). Accepts NULL. */
void ev_pdf_free(ev_pdf_t *pdf);

/* Number of pages (>= 1 for an opened document). */
int ev_pdf_page_count(const ev_pdf_t *pdf);

/*
 * Extracts the text of the first `max_pages` pages (<= 0: all), stopping
 * before `max_bytes` bytes of output (must be > 0). Whitespace runs become one
 * space, or one newline when they contain a line or page break; leading and
 * trailing whitespace is dropped; control characters and NUL are removed;
 * invalid UTF-8 becomes U+FFFD; output never ends in the middle of a
 * character. *text is a new NUL-terminated string (free with free()), *len its
 * length in bytes (may be 0 for a PDF with no text layer, e.g. scans);
 * *truncated (may be NULL) tells whether pages or bytes were left out.
 * Returns 0, or EV_EPARSE when a page cannot be loaded.
 */
int ev_pdf_text(ev_pdf_t *pdf, char **text, size_t *len, bool *truncated, int max_pages,
                size_t max_bytes);

/*
 * As ev_pdf_text, and each page contributes at most `max_page_bytes` (> 0)
 * bytes, cut as they are fed, so one enormous page cannot crowd out the rest;
 * *truncated then also tells whether a page was cut.
 */
int ev_pdf_text_paged(ev_pdf_t *pdf, char **text, size_t *len, bool *truncated, int max_pages,
                      size_t max_bytes, size_t max_page_bytes);

/*
 * Normalises arbitrary bytes the same way as ev_pdf_text (exposed for the
 * prompt builder and for tests). Appends to nothing: returns a new string.
 */
char *ev_pdf_normalise_text(const char *in, size_t in_len, size_t max_bytes, size_t *out_len,
                            bool *truncated);

#endif
