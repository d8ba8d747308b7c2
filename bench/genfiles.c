/*
 * genfiles.c - benchmark submission files, straight into Postgres COPY BINARY.
 *
 * What: for every submission id read from stdin (one per line), writes two
 * submission_files rows to stdout in the PostgreSQL binary COPY format
 * (columns submission_id, kind, filename, content):
 *   - a valid one-page PDF of about --pdf-bytes bytes whose page text names
 *     the submission, padded by an unreferenced binary stream object;
 *   - a valid 16x16 PNG of about --png-bytes bytes, padded by a private
 *     ancillary chunk ("beNc") that decoders skip.
 * The padding is pseudo-random and seeded by the submission id (and --seed),
 * so every file has distinct bytes and the service's verdict cache never hits.
 * Both files pass libmagic (application/pdf, image/png), poppler opens the
 * PDF and extracts its text, and every PNG chunk carries a correct CRC.
 *
 * How: no allocation per row beyond two reusable buffers; xorshift64* for
 * the padding; CRC-32 and Adler-32 computed here (no zlib dependency).
 *
 * Usage:
 *   genfiles [--pdf-bytes N] [--png-bytes N] [--seed S] < ids | psql -c
 *       "COPY submission_files (submission_id, kind, filename, content) FROM STDIN (FORMAT binary)"
 *   genfiles --sample DIR     writes DIR/sample.pdf and DIR/sample.png (id 1) to look at.
 *
 * Built by bench/run.sh with `cc -O2`; it is not part of the service.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    unsigned char *d;
    size_t len, cap;
} buf_t;

static void die(const char *msg)
{
    fprintf(stderr, "genfiles: %s\n", msg);
    exit(2);
}

static void buf_reserve(buf_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    unsigned char *d = realloc(b->d, cap);
    if (!d)
        die("out of memory");
    b->d = d;
    b->cap = cap;
}

static void buf_put(buf_t *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->d + b->len, p, n);
    b->len += n;
}

static void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        die("format error");
    buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf((char *)b->d + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void put_be32(buf_t *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    buf_put(b, x, 4);
}

/* ---- pseudo-random padding: xorshift64*; bytes avoid nothing in particular ---- */

static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
    rng_state = s * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    if (rng_state == 0)
        rng_state = 1;
}

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static void put_random(buf_t *b, size_t n)
{
    buf_reserve(b, n);
    unsigned char *p = b->d + b->len;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = rng_next();
        memcpy(p + i, &v, 8);
    }
    if (i < n) {
        uint64_t v = rng_next();
        memcpy(p + i, &v, n - i);
    }
    b->len += n;
}

/* ---- CRC-32 (PNG) and Adler-32 (zlib) ---- */

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static uint32_t adler32_of(const unsigned char *p, size_t n)
{
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < n; i++) {
        a = (a + p[i]) % 65521;
        b = (b + a) % 65521;
    }
    return (b << 16) | a;
}

/* One PNG chunk: length, type, data, CRC over type + data. */
static void png_chunk(buf_t *b, const char type[4], const unsigned char *data, size_t n,
                      size_t random_n)
{
    put_be32(b, (uint32_t)(n + random_n));
    size_t start = b->len;
    buf_put(b, type, 4);
    if (n)
        buf_put(b, data, n);
    if (random_n)
        put_random(b, random_n);
    put_be32(b, crc32_of(b->d + start, b->len - start));
}

#define PNG_W 16
#define PNG_H 16

/* A 16x16 RGB gradient (tinted by id) plus random padding up to ~total bytes. */
static void make_png(buf_t *b, uint64_t id, size_t total)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char ihdr[13] = {0, 0, 0, PNG_W, 0, 0, 0, PNG_H, 8, 2, 0, 0, 0};
    unsigned char raw[PNG_H * (1 + PNG_W * 3)];
    unsigned char idat[2 + 5 + sizeof(raw) + 4];

    b->len = 0;
    buf_put(b, sig, sizeof(sig));
    png_chunk(b, "IHDR", ihdr, sizeof(ihdr), 0);
    for (int y = 0; y < PNG_H; y++) {
        unsigned char *row = raw + y * (1 + PNG_W * 3);
        row[0] = 0; /* filter: none */
        for (int x = 0; x < PNG_W; x++) {
            row[1 + x * 3] = (unsigned char)(x * 16);
            row[2 + x * 3] = (unsigned char)(y * 16);
            row[3 + x * 3] = (unsigned char)(id * 37);
        }
    }
    /* zlib stream with one stored (uncompressed) block. */
    size_t k = 0;
    idat[k++] = 0x78;
    idat[k++] = 0x01;
    idat[k++] = 0x01; /* BFINAL, BTYPE = stored */
    idat[k++] = (unsigned char)(sizeof(raw) & 0xFF);
    idat[k++] = (unsigned char)(sizeof(raw) >> 8);
    idat[k++] = (unsigned char)(~sizeof(raw) & 0xFF);
    idat[k++] = (unsigned char)((~sizeof(raw) >> 8) & 0xFF);
    memcpy(idat + k, raw, sizeof(raw));
    k += sizeof(raw);
    uint32_t ad = adler32_of(raw, sizeof(raw));
    idat[k++] = (unsigned char)(ad >> 24);
    idat[k++] = (unsigned char)(ad >> 16);
    idat[k++] = (unsigned char)(ad >> 8);
    idat[k++] = (unsigned char)ad;
    png_chunk(b, "IDAT", idat, k, 0);
    size_t fixed = b->len + 12 /* beNc */ + 12 /* IEND */;
    png_chunk(b, "beNc", NULL, 0, total > fixed ? total - fixed : 0);
    png_chunk(b, "IEND", NULL, 0, 0);
}

/* A one-page PDF whose text names the submission, padded by an unreferenced
 * binary stream, with an exact cross-reference table. */
static void make_pdf(buf_t *b, uint64_t id, size_t total)
{
    size_t off[8];
    char text[256];
    int tl = snprintf(text, sizeof(text),
                      "BT /F1 12 Tf 72 720 Td (Bench submission %llu: solar canopies for 40 bus "
                      "stops, with a budget and a timeline.) Tj ET\n",
                      (unsigned long long)id);

    b->len = 0;
    buf_printf(b, "%%PDF-1.4\n%%\xE2\xE3\xCF\xD3\n");
    off[1] = b->len;
    buf_printf(b, "1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n");
    off[2] = b->len;
    buf_printf(b, "2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n");
    off[3] = b->len;
    buf_printf(b, "3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
                  "/Resources << /Font << /F1 5 0 R >> >> >>\nendobj\n");
    off[4] = b->len;
    buf_printf(b, "4 0 obj\n<< /Length %d >>\nstream\n%sendstream\nendobj\n", tl, text);
    off[5] = b->len;
    buf_printf(b, "5 0 obj\n<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>\nendobj\n");
    off[6] = b->len;
    /* The trailer part below is about 200 bytes. */
    size_t pad = total > b->len + 320 ? total - b->len - 320 : 16;
    buf_printf(b, "6 0 obj\n<< /Length %zu >>\nstream\n", pad);
    put_random(b, pad);
    buf_printf(b, "\nendstream\nendobj\n");
    size_t xref = b->len;
    buf_printf(b, "xref\n0 7\n0000000000 65535 f \n");
    for (int i = 1; i <= 6; i++)
        buf_printf(b, "%010zu 00000 n \n", off[i]);
    buf_printf(b, "trailer\n<< /Size 7 /Root 1 0 R >>\nstartxref\n%zu\n%%%%EOF\n", xref);
}

/* ---- COPY BINARY ---- */

static void out_write(const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, stdout) != n)
        die("write to stdout failed");
}

static void out_be16(int16_t v)
{
    unsigned char x[2] = {(unsigned char)((uint16_t)v >> 8), (unsigned char)v};
    out_write(x, 2);
}

static void out_be32(int32_t v)
{
    uint32_t u = (uint32_t)v;
    unsigned char x[4] = {(unsigned char)(u >> 24), (unsigned char)(u >> 16),
                          (unsigned char)(u >> 8), (unsigned char)u};
    out_write(x, 4);
}

static void out_field(const void *p, size_t n)
{
    if (n > INT32_MAX)
        die("field too large");
    out_be32((int32_t)n);
    out_write(p, n);
}

static void out_row(uint64_t id, const char *kind, const char *filename, const buf_t *content)
{
    unsigned char idbe[8];
    for (int i = 0; i < 8; i++)
        idbe[i] = (unsigned char)(id >> (56 - 8 * i));
    out_be16(4);
    out_field(idbe, 8);
    out_field(kind, strlen(kind));
    out_field(filename, strlen(filename));
    out_field(content->d, content->len);
}

static size_t parse_size(const char *s, const char *flag)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end || v < 1024 || v > 64ull * 1024 * 1024) {
        fprintf(stderr, "genfiles: %s wants a byte count between 1024 and 64 MiB\n", flag);
        exit(2);
    }
    return (size_t)v;
}

static int write_sample(const char *dir, size_t pdf_bytes, size_t png_bytes, uint64_t seed)
{
    buf_t b = {0};
    char path[4096];
    const char *names[2] = {"sample.pdf", "sample.png"};
    for (int i = 0; i < 2; i++) {
        rng_seed(1 ^ seed);
        if (i == 0)
            make_pdf(&b, 1, pdf_bytes);
        else
            make_png(&b, 1, png_bytes);
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(b.d, 1, b.len, f) != b.len || fclose(f) != 0)
            die("cannot write the sample files");
    }
    free(b.d);
    return 0;
}

int main(int argc, char **argv)
{
    size_t pdf_bytes = 100 * 1024, png_bytes = 50 * 1024;
    uint64_t seed = 0;
    const char *sample_dir = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--pdf-bytes") == 0 && i + 1 < argc)
            pdf_bytes = parse_size(argv[++i], "--pdf-bytes");
        else if (strcmp(argv[i], "--png-bytes") == 0 && i + 1 < argc)
            png_bytes = parse_size(argv[++i], "--png-bytes");
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--sample") == 0 && i + 1 < argc)
            sample_dir = argv[++i];
        else {
            fprintf(stderr, "usage: genfiles [--pdf-bytes N] [--png-bytes N] [--seed S] < ids\n"
                            "       genfiles --sample DIR\n");
            return 2;
        }
    }
    crc_init();
    if (sample_dir)
        return write_sample(sample_dir, pdf_bytes, png_bytes, seed);

    static const char header[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\xff', '\r', '\n', '\0'};
    out_write(header, sizeof(header));
    out_be32(0); /* flags */
    out_be32(0); /* header extension length */

    buf_t pdf = {0}, png = {0};
    char line[64], name[64];
    unsigned long long rows = 0;
    while (fgets(line, sizeof(line), stdin)) {
        char *end = NULL;
        errno = 0;
        unsigned long long id = strtoull(line, &end, 10);
        if (end == line)
            continue; /* blank line */
        if (errno || (*end && *end != '\n'))
            die("stdin must hold one submission id per line");
        rng_seed(id ^ (seed << 32));
        make_pdf(&pdf, id, pdf_bytes);
        make_png(&png, id, png_bytes);
        snprintf(name, sizeof(name), "bench-%llu.pdf", id);
        out_row(id, "pdf", name, &pdf);
        snprintf(name, sizeof(name), "bench-%llu.png", id);
        out_row(id, "image", name, &png);
        rows++;
    }
    out_be16(-1); /* trailer */
    if (fflush(stdout) != 0)
        die("write to stdout failed");
    free(pdf.d);
    free(png.d);
    fprintf(stderr, "genfiles: %llu submissions, %llu files\n", rows, rows * 2);
    return 0;
}
