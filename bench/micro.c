/*
 * micro.c - CPU cost of each local step of one benchmark submission.
 *
 * What: times, on the real library code (libev.a of build-bench/), the work a
 * worker does per submission that is not waiting: SHA-256 of both files,
 * libmagic classification, loading a file item (classify + hash), opening
 * the PDF and extracting its text (in the process, and as the service does it:
 * in the parse sandbox, whose extra cost is reported), base64, and building
 * the three request
 * bodies (theme: text; pdf: the PDF inline; image: the PNG inline) for
 * Gemini and for Groq. Used to explain the `overhead` scenario's CPU figure
 * (bench/README.md, "Where the CPU goes"); not part of the default run.
 *
 * How: the files are made by the same generator as the benchmark
 * (genfiles --sample); each step runs ITER times on the calling thread and
 * reports the mean thread CPU time (CLOCK_THREAD_CPUTIME_ID) in microseconds.
 *
 * Usage: bench/run.sh micro   (builds it and runs it on fresh sample files)
 */
#include "ev/files.h"
#include "ev/gemini.h"
#include "ev/groq.h"
#include "ev/hash.h"
#include "ev/pdf.h"
#include "ev/provider.h"
#include "ev/sandbox.h"

#include <sys/resource.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ITER 200

static double cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *d = malloc((size_t)n);
    if (!d || fread(d, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    *len = (size_t)n;
    return d;
}

static double total;

static void report(const char *name, double us, int per_submission)
{
    printf("%-52s %9.1f us  x%d per submission\n", name, us, per_submission);
    total += us * per_submission;
}

static double rusage_us(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
}

/*
 * The PDF as the service opens it: in a parse child of the sandbox. The
 * caller's thread CPU, plus the CPU of the server and its children (counted
 * into RUSAGE_CHILDREN once the server is reaped), against the same work in
 * the process: the difference is what the isolation costs per PDF.
 */
static int sandbox_rows(const unsigned char *pdf, size_t pdf_len, double in_process)
{
    ev_sandbox_options_t so = EV_SANDBOX_OPTIONS_INIT;
    ev_sandbox_t *sb = NULL;
    double c0 = rusage_us(RUSAGE_CHILDREN), t0 = cpu_us();
    if (ev_sandbox_new(&sb, &so) < 0) {
        fprintf(stderr, "ev_sandbox_new failed\n");
        return -1;
    }
    double caller = 0, peak_kb = 0;
    for (int i = 0; i < ITER; i++) {
        ev_sandbox_pdf_t res;
        char *why = NULL;
        if (ev_sandbox_pdf(sb, &res, pdf, pdf_len, 100, 64 * 1024, 16 * 1024, &why) < 0) {
            fprintf(stderr, "ev_sandbox_pdf: %s\n", why ? why : "?");
            return -1;
        }
        peak_kb = res.usage.max_rss_kb > peak_kb ? (double)res.usage.max_rss_kb : peak_kb;
        ev_sandbox_pdf_clear(&res);
    }
    caller = (cpu_us() - t0) / ITER;
    ev_sandbox_free(sb);
    double helper = (rusage_us(RUSAGE_CHILDREN) - c0) / ITER;
    report("PDF in the sandbox: caller thread", caller, 1);
    report("PDF in the sandbox: parse server + children", helper, 1);
    printf("%-52s %9.1f us  (sandbox total minus the same work in the process)\n",
           "  isolation cost per PDF", caller + helper - in_process);
    printf("%-52s %9.1f MiB (peak RSS of a parse child, shared pages included)\n",
           "  parse child memory", peak_kb / 1024.0);
    return 0;
}

int main(int argc, char **argv)
{
    /* The sandbox re-executes this program as its parse server. */
    if (argc >= 2 && strcmp(argv[1], EV_SANDBOX_SERVER_ARG) == 0)
        return ev_sandbox_server_main(argc, argv);
    if (argc != 3) {
        fprintf(stderr, "usage: micro PDF PNG\n");
        return 2;
    }
    size_t pdf_len, png_len;
    unsigned char *pdf = slurp(argv[1], &pdf_len);
    unsigned char *png = slurp(argv[2], &png_len);
    printf("files: PDF %zu bytes, PNG %zu bytes; mean thread CPU of %d runs\n", pdf_len, png_len,
           ITER);

    char hex[EV_HASH_SHA256_HEX_LEN];
    double t0 = cpu_us();
    for (int i = 0; i < ITER; i++) {
        ev_hash_sha256_hex(hex, pdf, pdf_len);
        ev_hash_sha256_hex(hex, png, png_len);
    }
    double sha = (cpu_us() - t0) / ITER;
    printf("%-52s %9.1f us  (inside ev_files_load)\n", "  sha256 (PDF + PNG)", sha);
    printf("%-52s %9.1f MB/s\n", "  sha256 throughput", (double)(pdf_len + png_len) / sha);

    ev_files_t *files = NULL;
    ev_files_options_t fo = EV_FILES_OPTIONS_INIT;
    if (ev_files_new(&files, &fo) < 0) {
        fprintf(stderr, "ev_files_new failed\n");
        return 1;
    }
    char mime[128];
    t0 = cpu_us();
    for (int i = 0; i < ITER; i++) {
        ev_files_classify(files, mime, sizeof(mime), pdf, pdf_len);
        ev_files_classify(files, mime, sizeof(mime), png, png_len);
    }
    printf("%-52s %9.1f us  (inside ev_files_load)\n", "  libmagic classify (PDF + PNG)",
           (cpu_us() - t0) / ITER);

    t0 = cpu_us();
    for (int i = 0; i < ITER; i++) {
        ev_files_source_t sp = {
            .kind = EV_FILE_PDF, .filename = "a.pdf", .content = pdf, .content_len = pdf_len};
        ev_files_source_t si = {
            .kind = EV_FILE_IMAGE, .filename = "a.png", .content = png, .content_len = png_len};
        ev_files_item_t *a = NULL, *b = NULL;
        char *why = NULL;
        if (ev_files_load(files, &a, &sp, &why) < 0 || ev_files_load(files, &b, &si, &why) < 0) {
            fprintf(stderr, "ev_files_load refused a sample: %s\n", why ? why : "?");
            return 1;
        }
        ev_files_item_free(a);
        ev_files_item_free(b);
    }
    report("ev_files_load (PDF + PNG: copy, classify, hash)", (cpu_us() - t0) / ITER, 1);

    /* Poppler builds its global tables when the first document of the
     * process opens and drops them when the last one closes: measure a
     * document opened alone, and one opened while another stays open (what
     * overlapping workers see). */
    char *text = NULL;
    size_t tlen = 0;
    ev_pdf_t *keep = NULL;
    double alone = 0, warm = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            ev_pdf_options_t po = EV_PDF_OPTIONS_INIT;
            char *why = NULL;
            if (ev_pdf_open(&keep, pdf, pdf_len, &po, &why) < 0)
                return 1;
        }
        t0 = cpu_us();
        for (int i = 0; i < ITER; i++) {
            ev_pdf_t *doc = NULL;
            ev_pdf_options_t po = EV_PDF_OPTIONS_INIT;
            char *why = NULL;
            if (ev_pdf_open(&doc, pdf, pdf_len, &po, &why) < 0) {
                fprintf(stderr, "ev_pdf_open: %s\n", why ? why : "?");
                return 1;
            }
            free(text);
            text = NULL;
            ev_pdf_text(doc, &text, &tlen, NULL, 0, 64 * 1024);
            ev_pdf_free(doc);
        }
        if (pass == 0) {
            alone = (cpu_us() - t0) / ITER;
            printf("%-52s %9.1f us  (no other document open)\n",
                   "  ev_pdf_open + ev_pdf_text, alone", alone);
        } else {
            warm = (cpu_us() - t0) / ITER;
            printf("%-52s %9.1f us  (in the process, as before the sandbox)\n",
                   "  ev_pdf_open + ev_pdf_text, another doc open", warm);
        }
    }
    ev_pdf_free(keep);
    if (sandbox_rows(pdf, pdf_len, warm) < 0)
        return 1;

    size_t bl;
    t0 = cpu_us();
    for (int i = 0; i < ITER; i++) {
        free(ev_llm_base64(pdf, pdf_len, &bl));
        free(ev_llm_base64(png, png_len, &bl));
    }
    printf("%-52s %9.1f us  (inside the body builds below)\n", "  base64 (PDF + PNG)",
           (cpu_us() - t0) / ITER);

    const char *sys = "You judge submissions. Respond with JSON only.";
    const char *user = "Event: Green City Challenge. Title: Solar bus stops #1. Does it fit? json";
    ev_llm_media_t mp = {"application/pdf", pdf, pdf_len};
    ev_llm_media_t mi = {"image/png", png, png_len};
    ev_llm_request_t theme = {
        .system_prompt = sys, .user_text = user, .text_only = true, .pdf_text = NULL};
    ev_llm_request_t rpdf = {
        .system_prompt = sys, .user_text = user, .media = &mp, .media_count = 1};
    ev_llm_request_t rimg = {
        .system_prompt = sys, .user_text = user, .media = &mi, .media_count = 1};
    const ev_llm_request_t *reqs[3] = {&theme, &rpdf, &rimg};
    const char *names[3] = {"gemini body: theme (text)", "gemini body: pdf (PDF inline)",
                            "gemini body: image (PNG inline)"};
    for (int r = 0; r < 3; r++) {
        t0 = cpu_us();
        for (int i = 0; i < ITER; i++) {
            char *body = NULL;
            size_t len = 0;
            if (ev_gemini_build_body(&body, &len, reqs[r], 0) < 0) {
                fprintf(stderr, "ev_gemini_build_body failed\n");
                return 1;
            }
            free(body);
        }
        report(names[r], (cpu_us() - t0) / ITER, 1);
    }
    t0 = cpu_us();
    for (int i = 0; i < ITER; i++) {
        char *body = NULL;
        size_t len = 0;
        if (ev_groq_build_body(&body, &len, &rimg, "meta-llama/llama-4-scout-17b-16e-instruct") <
            0) {
            fprintf(stderr, "ev_groq_build_body failed\n");
            return 1;
        }
        free(body);
    }
    printf("%-52s %9.1f us  (fallback only)\n", "groq body: image (PNG data URL)",
           (cpu_us() - t0) / ITER);

    printf("%-52s %9.1f us\n", "sum of the x1 steps, per submission", total);
    free(text);
    ev_files_free(files);
    free(pdf);
    free(png);
    return 0;
}
