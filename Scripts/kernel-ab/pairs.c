// Paired A/B timing of the decode kernels (dev-time only; built and run by kernel-ab.sh).
// A is this tree's CChimeraKernels, B another revision's, compiled with every chk_* function renamed
// B_chk_* (so both live in one process). Each repetition runs A and B in alternating order, each
// right after a read-bandwidth probe that also evicts the caches, and reports B's time against A's
// per pair: on a machine whose bandwidth moves by tens of percent from one second to the next,
// only such pairs resolve differences of a few percent.
//
//   pairs sequence tinyllama|qwen2 f32|f16|bf16|q8_0|q4_0 [reps]   one decoded token's products
//   pairs matrix ROWS COLS f32|f16|bf16|q8_0|q4_0|q6_0 [reps]  many copies of one matrix (600 MB)
//   pairs attention HEADS KV_HEADS KEYS LAYERS [reps]      decode attention over an f32 cache (with CACHED=1
//                                                          in the environment every layer reads layer 0's
//                                                          cache: from cache after the first, the compute alone;
//                                                          with HALF=1 a float16 cache)
//   pairs sequence-attention TOKENS HEADS HEAD_DIM [reps]   an encoder's attention over its own tokens
//   pairs gemm M N K [reps] [threads] [format]              one GEMM, weights f32 (default) or another format
//
// With AVX2=1 in the environment both sides run their AVX2 kernels (as on a CPU without AVX-512);
// with GAP_US=g `sequence` leaves g microseconds before each product, as decode's serial work does;
// with TOKENS=n `sequence` multiplies n activation rows a product (a short prompt: chk_matvec_rows).
#include "chimera_kernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

void B_chk_matvec_parts(const chk_matvec_part *parts, int count, const float *x, long cols, int threads);
void B_chk_matvec_rows(const chk_matvec_part *parts, int count, const float *x, long ldx, long tokens, long cols, int threads);
void B_chk_prefetch_product(const chk_matvec_part *parts, int count, long cols, int threads, long most);
int B_chk_attention_cached(const float *q, long ldq, long tokens, int half, const void *keyPanels, const void *values, long capacity,
                           long keyCount, long heads, long kvHeads, long headDim, float scale, long causalOffset, float *out, long ldo,
                           int threads);

int B_chk_attention(const float *q, long ldq, const float *keys, const float *values, long ldkv, long tokens, long keyCount,
                    long heads, long kvHeads, long headDim, float scale, long causalOffset, float *out, long ldo, int threads);
int B_chk_force_avx2(int on);
double B_chk_read_pass(const float *p, long floats, int threads);
int B_chk_gemm_nt(chk_format format, const void *w, const uint16_t *scales, long n, long k, const float *bias,
                  const float *x, long ldx, long m, float *c, long ldc, int accumulate, int threads);

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec; }
static int ascending(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

static chk_format format_named(const char *name) {
    if (!strcmp(name, "f32")) return CHK_F32;
    if (!strcmp(name, "f16")) return CHK_F16;
    if (!strcmp(name, "bf16")) return CHK_BF16;
    if (!strcmp(name, "q8_0")) return CHK_Q8_0;
    if (!strcmp(name, "q4_0")) return CHK_Q4_0;
    if (!strcmp(name, "q6_0")) return CHK_Q6_0;  // (a B revision before q6_0 computes nothing: read A's share only)
    fprintf(stderr, "format: expected f32, f16, bf16, q8_0, q4_0 or q6_0, found %s\n", name);
    exit(2);
}

// Memory for what the product streams (weights, KV caches, the probe's buffer) as the package
// holds it: in huge pages (WeightMemory), 64-byte pieces of 64 MiB regions, zeroed. On 4 KiB pages a
// layer's decode attention from memory read 2-9 % slower (each 4 KiB a TLB entry).
static void *huge_alloc(size_t bytes) {
    enum { REGION = 64 << 20, HUGE = 2 << 20 };
    static char *region; static size_t used, size;
    bytes = (bytes + 63) / 64 * 64;
    if (!region || size - used < bytes) {
        size = bytes > REGION ? (bytes + HUGE - 1) / HUGE * HUGE : REGION;
        if (posix_memalign((void **)&region, HUGE, size)) { fprintf(stderr, "out of memory\n"); exit(1); }
        madvise(region, size, MADV_HUGEPAGE);
        memset(region, 0, size);
        used = 0;
    }
    used += bytes;
    return region + used - bytes;
}

static long total_bytes;
// Bytes of a float element (0 for the quantized formats).
static long float_bytes(chk_format f) { return f == CHK_F32 ? 4 : f == CHK_F16 || f == CHK_BF16 ? 2 : 0; }

// A matrix of arbitrary but valid bytes (float values finite) with scales of 2^-7.
static chk_matvec_part matrix(long rows, long cols, chk_format f, float *y) {
    long n = rows * cols, es = float_bytes(f), bytes = f == CHK_Q4_0 ? n / 2 : f == CHK_Q6_0 ? n / 4 * 3 : es ? es * n : n;
    chk_matvec_part p = {f, huge_alloc((size_t)bytes), huge_alloc((size_t)(n / 32 * 2)), rows, y};
    unsigned char *w = (unsigned char *)p.w;
    for (long i = 0; i < bytes; i++) w[i] = (unsigned char)(i * 2654435761u >> 13);
    // Each element's top byte: sign and low bits random, exponent fixed high enough that no value nor
    // product is subnormal (a bfloat16 exponent down to 0 had made FMAs take assists: 0.2 of the probe).
    if (es) for (long i = es - 1; i < bytes; i += es) w[i] = (unsigned char)((w[i] & 0x83) | 0x38);
    for (long i = 0; i < n / 32; i++) ((uint16_t *)p.scales)[i] = 0x2000;
    total_bytes += bytes + (es ? 0 : n / 16);
    return p;
}

typedef struct { double a, b, probeA; } pair_times;  // probeA: the GB/s of the probe before A

static float *probe; static long probeFloats;
// reps pairs of A and B (in alternating order), each run right after a probe; times divided by `per`.
static pair_times *measure(int reps, void (*run)(int useB, void *context), void *context, double per) {
    pair_times *t = malloc(sizeof(pair_times) * reps);
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < 2; k++) {
            int useB = (r & 1) ? 1 - k : k;
            // Each side's own probe: the two builds have a thread pool each, and the one that just
            // ran has its worker spinning, ready, while the other's sleeps (waking it, and sharing
            // the cores with the spinning one, cost B up to 2.5 × in sub-millisecond modes).
            double rate = (useB ? B_chk_read_pass : chk_read_pass)(probe, probeFloats, 2);
            if (!useB) t[r].probeA = rate;
            double t0 = now();
            run(useB, context);
            double seconds = (now() - t0) / per;
            if (useB) t[r].b = seconds; else t[r].a = seconds;
        }
    return t;
}
static void report(const char *what, pair_times *t, int reps, double bytes) {
    double *a = malloc(sizeof(double) * reps), *b = malloc(sizeof(double) * reps), *r = malloc(sizeof(double) * reps);
    double *share = malloc(sizeof(double) * reps);
    for (int i = 0; i < reps; i++) { a[i] = t[i].a; b[i] = t[i].b; r[i] = t[i].a / t[i].b; share[i] = bytes / t[i].a / 1e9 / t[i].probeA; }
    qsort(a, reps, 8, ascending); qsort(b, reps, 8, ascending); qsort(r, reps, 8, ascending); qsort(share, reps, 8, ascending);
    printf("%s: A %.1f us, B %.1f us (medians)", what, a[reps / 2] * 1e6, b[reps / 2] * 1e6);
    if (bytes > 0) printf(", A %.1f GB/s, B %.1f GB/s", bytes / a[reps / 2] / 1e9, bytes / b[reps / 2] / 1e9);
    printf("; B's speed over A's per pair: median %.3f (quartiles %.3f-%.3f)\n", r[reps / 2], r[reps / 4], r[3 * reps / 4]);
    if (bytes > 0) printf("A's GB/s over its probe's: median %.2f (quartiles %.2f-%.2f)\n", share[reps / 2], share[reps / 4], share[3 * reps / 4]);
}

typedef void (*product_fn)(const chk_matvec_part *, int, const float *, long, int);
static product_fn product(int useB) { return useB ? B_chk_matvec_parts : chk_matvec_parts; }

// With GAP_US=g in the environment, each product is first announced (chk_prefetch_product, as decode
// does) and then g microseconds pass, as the caller's serial work between two products takes them.
static double gap_seconds;
static long sequence_tokens = 1, sequence_ldx;  // TOKENS=n: n rows of x, sequence_ldx apart
static void gap_then_product(int useB, const chk_matvec_part *parts, int count, const float *x, long cols) {
    if (gap_seconds > 0) {
        (useB ? B_chk_prefetch_product : chk_prefetch_product)(parts, count, cols, 2, 256L << 10);
        for (double t0 = now(); now() - t0 < gap_seconds;) {}
    }
    if (sequence_tokens > 1) (useB ? B_chk_matvec_rows : chk_matvec_rows)(parts, count, x, sequence_ldx, sequence_tokens, cols, 2);
    else product(useB)(parts, count, x, cols, 2);
}

typedef struct { chk_matvec_part (*layer)[7]; int layers; chk_matvec_part head; const float *x; long h, ffn; } sequence_job;
static void run_sequence(int useB, void *context) {
    const sequence_job *j = context;
    for (int l = 0; l < j->layers; l++) {
        gap_then_product(useB, &j->layer[l][0], 3, j->x, j->h); gap_then_product(useB, &j->layer[l][3], 1, j->x, j->h);
        gap_then_product(useB, &j->layer[l][4], 2, j->x, j->h); gap_then_product(useB, &j->layer[l][6], 1, j->x, j->ffn);
    }
    gap_then_product(useB, &j->head, 1, j->x, j->h);
}

typedef struct { chk_matvec_part *copies; int count; const float *x; long cols; } matrix_job;
static void run_matrix(int useB, void *context) {
    const matrix_job *j = context;
    for (int i = 0; i < j->count; i++) product(useB)(&j->copies[i], 1, j->x, j->cols, 2);
}

typedef struct { const float *q; void **keys, **values; long heads, kvHeads, keyCount, capacity, hd; int layers; float *out; int cached, half; } attention_job;
static void run_attention(int useB, void *context) {
    const attention_job *j = context;
    for (int l = 0; l < j->layers; l++)
        (useB ? B_chk_attention_cached : chk_attention_cached)(j->q, j->heads * j->hd, 1, j->half, j->keys[j->cached ? 0 : l], j->values[j->cached ? 0 : l], j->capacity,
                                                              j->keyCount, j->heads, j->kvHeads, j->hd, 0.125f, j->keyCount - 1,
                                                              j->out, j->heads * j->hd, 2);
}

typedef struct { chk_matvec_part w; const float *x, *bias; float *c; long m, n, k; int threads; } gemm_job;
static void run_gemm(int useB, void *context) {
    const gemm_job *j = context;
    (useB ? B_chk_gemm_nt : chk_gemm_nt)(j->w.format, j->w.w, j->w.scales, j->n, j->k, j->bias, j->x, j->k, j->m, j->c, j->n, 0, j->threads);
}

typedef struct { const float *qkv; float *out; long tokens, heads, hd; } sequence_attention_job;
static void run_sequence_attention(int useB, void *context) {
    const sequence_attention_job *j = context;
    long width = j->heads * j->hd;  // q, k and v side by side in each row, as a fused q/k/v product leaves them
    (useB ? B_chk_attention : chk_attention)(j->qkv, 3 * width, j->qkv + width, j->qkv + 2 * width, 3 * width, j->tokens, j->tokens,
                                             j->heads, j->heads, j->hd, 0.125f, -1, j->out, width, 2);
}

static float *activation(long n) {
    float *x = malloc(sizeof(float) * n);
    for (long i = 0; i < n; i++) x[i] = (float)(i % 11) * 0.1f - 0.5f;
    return x;
}

int main(int argc, char **argv) {
    if (getenv("GAP_US")) gap_seconds = atof(getenv("GAP_US")) * 1e-6;
    probeFloats = 128L << 20;
    probe = huge_alloc(sizeof(float) * (size_t)probeFloats);
    for (long i = 0; i < probeFloats; i++) probe[i] = 1;
    char what[160];
    if (getenv("AVX2") && !(chk_force_avx2(1) && B_chk_force_avx2(1))) {
        fprintf(stderr, "AVX2=1: this CPU has no AVX2\n");
        return 2;
    }
    if (argc >= 4 && !strcmp(argv[1], "sequence")) {
        int qwen = !strcmp(argv[2], "qwen2"), reps = argc > 4 ? atoi(argv[4]) : 30;
        chk_format f = format_named(argv[3]);
        long h = qwen ? 896 : 2048, ffn = qwen ? 4864 : 5632, kv = qwen ? 128 : 256, vocab = qwen ? 151936 : 32000;
        if (getenv("TOKENS")) sequence_tokens = atol(getenv("TOKENS"));
        if (sequence_tokens < 1 || sequence_tokens > CHK_MATVEC_TOKENS) sequence_tokens = 1;
        sequence_ldx = ffn;
        sequence_job j = {NULL, qwen ? 24 : 22, {0}, activation(sequence_tokens * ffn), h, ffn};
        float *y = malloc(sizeof(float) * vocab * sequence_tokens);  // (the parts' outputs overlap: only the time counts)
        j.layer = malloc(sizeof(chk_matvec_part) * 7 * j.layers);
        for (int l = 0; l < j.layers; l++) {
            j.layer[l][0] = matrix(h, h, f, y); j.layer[l][1] = matrix(kv, h, f, y + h); j.layer[l][2] = matrix(kv, h, f, y + h + kv);
            j.layer[l][3] = matrix(h, h, f, y); j.layer[l][4] = matrix(ffn, h, f, y); j.layer[l][5] = matrix(ffn, h, f, y + ffn);
            j.layer[l][6] = matrix(h, ffn, f, y);
        }
        j.head = matrix(vocab, h, qwen && f == CHK_Q4_0 ? CHK_Q6_0 : f, y);  // a tied head is q6_0 under q4_0, as quantize makes it
        snprintf(what, sizeof what, "%s %s token's products (%.0f MB)", argv[2], argv[3], total_bytes / 1e6);
        report(what, measure(reps, run_sequence, &j, 1), reps, (double)total_bytes);
        return 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "matrix")) {
        long rows = atol(argv[2]), cols = atol(argv[3]);
        chk_format f = format_named(argv[4]);
        int reps = argc > 5 ? atoi(argv[5]) : 30;
        float *y = malloc(sizeof(float) * rows);
        matrix_job j = {NULL, (int)(600000000L / (rows * cols * (float_bytes(f) ? float_bytes(f) : 1))) + 1, activation(cols), cols};
        j.copies = malloc(sizeof(chk_matvec_part) * j.count);
        for (int i = 0; i < j.count; i++) j.copies[i] = matrix(rows, cols, f, y);
        snprintf(what, sizeof what, "%ld x %ld %s (one of %d copies)", rows, cols, argv[4], j.count);
        report(what, measure(reps, run_matrix, &j, j.count), reps, (double)total_bytes / j.count);
        return 0;
    }
    if (argc >= 6 && !strcmp(argv[1], "attention")) {
        attention_job j = {NULL, NULL, NULL, atol(argv[2]), atol(argv[3]), atol(argv[4]), 0, 64, atoi(argv[5]), NULL, getenv("CACHED") != NULL, getenv("HALF") != NULL};
        int reps = argc > 6 ? atoi(argv[6]) : 30;
        long width = j.kvHeads * j.hd;
        j.capacity = (j.keyCount + 31) / 32 * 32;
        float *q = malloc(sizeof(float) * j.heads * j.hd), *k = malloc(sizeof(float) * j.keyCount * width), *v = malloc(sizeof(float) * j.keyCount * width);
        for (long i = 0; i < j.keyCount * width; i++) { k[i] = (float)(i % 7) * 0.01f; v[i] = (float)(i % 5) * 0.1f; }
        for (long i = 0; i < j.heads * j.hd; i++) q[i] = (float)(i % 13) * 0.01f;
        j.q = q; j.out = malloc(sizeof(float) * j.heads * j.hd);
        j.keys = malloc(sizeof(void *) * j.layers); j.values = malloc(sizeof(void *) * j.layers);
        for (int l = 0; l < j.layers; l++) {
            j.keys[l] = huge_alloc((size_t)(j.capacity * width) * 4); j.values[l] = huge_alloc((size_t)(j.capacity * width) * 4);
            chk_kv_append(k, v, width, j.keyCount, 0, j.kvHeads, j.hd, j.capacity, j.half, j.keys[l], j.values[l]);
        }
        snprintf(what, sizeof what, "decode attention, %ld heads over %ld KV heads, %ld keys (a layer)", j.heads, j.kvHeads, j.keyCount);
        report(what, measure(reps, run_attention, &j, j.layers), reps, (double)(j.keyCount * width * (j.half ? 4 : 8)));
        return 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "sequence-attention")) {
        sequence_attention_job j = {NULL, NULL, atol(argv[2]), atol(argv[3]), atol(argv[4])};
        int reps = argc > 5 ? atoi(argv[5]) : 30;
        j.qkv = activation(j.tokens * 3 * j.heads * j.hd); j.out = malloc(sizeof(float) * j.tokens * j.heads * j.hd);
        snprintf(what, sizeof what, "attention of %ld tokens, %ld heads of %ld", j.tokens, j.heads, j.hd);
        report(what, measure(reps, run_sequence_attention, &j, 1), reps, 0);
        return 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "gemm")) {
        gemm_job j = {{0}, NULL, NULL, NULL, atol(argv[2]), atol(argv[3]), atol(argv[4]), argc > 6 ? atoi(argv[6]) : 2};
        int reps = argc > 5 ? atoi(argv[5]) : 30;
        const char *name = argc > 7 ? argv[7] : "f32";
        j.w = matrix(j.n, j.k, format_named(name), NULL);
        if (j.w.format == CHK_F32) {  // smaller values than matrix()'s bytes, so sums stay finite
            float *w = (float *)j.w.w;
            for (long i = 0; i < j.n * j.k; i++) w[i] = ((float)(i % 11) * 0.1f - 0.5f) * (float)(i % 17) * 0.01f;
        }
        j.x = activation(j.m * j.k); j.bias = activation(j.n); j.c = malloc(sizeof(float) * j.m * j.n);
        snprintf(what, sizeof what, "%s GEMM %ld x %ld x %ld, %d threads", name, j.m, j.n, j.k, j.threads);
        pair_times *t = measure(reps, run_gemm, &j, 1);
        report(what, t, reps, 0);
        double *a = malloc(sizeof(double) * reps);
        for (int i = 0; i < reps; i++) a[i] = t[i].a;
        qsort(a, reps, 8, ascending);
        printf("A: %.0f GFLOP/s (median)\n", 2.0 * j.m * j.n * j.k / a[reps / 2] / 1e9);
        return 0;
    }
    fprintf(stderr, "usage: see the comment at the top of pairs.c\n");
    return 2;
}
