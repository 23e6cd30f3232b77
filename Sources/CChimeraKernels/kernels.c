// Weight-format kernels with run-time CPU dispatch. Functions named *_avx512 / *_avx2 are compiled
// for those instruction sets through target attributes, so the rest of the package needs no
// special flags; `pick()` decides once which set this CPU runs.
#define _GNU_SOURCE  // sched_getaffinity, CPU_COUNT (the pool's core count)
#include "chimera_kernels.h"
#include "elementwise.h"
#include "weights_avx512.h"
#include "weights_avx2.h"
#include "scratch.h"
#include "pool.h"
#include "q6_blocks.h"
#include <immintrin.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,fma,f16c,avx2")))

// MARK: - Scalar conversions

static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) bits = sign;
        else {  // subnormal: normalize
            int e = -1;
            do { e++; mant <<= 1; } while (!(mant & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000 | (mant << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    float f; memcpy(&f, &bits, 4); return f;
}

static inline uint16_t float_to_half(float f) {
    uint32_t x; memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, absx = x & 0x7fffffff;
    if (absx >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0));
    if (absx >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  // rounds to infinity
    if (absx < 0x38800000) {  // subnormal or zero in half
        float af; memcpy(&af, &absx, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(af * 16777216.0f));  // 2^24: units of the smallest subnormal
    }
    uint32_t mant = absx & 0x7fffff, exp = (absx >> 23) - 127 + 15;
    uint32_t h = (exp << 10) | (mant >> 13), rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;  // nearest even; carries into the exponent correctly
    return (uint16_t)(sign | h);
}

static inline float bf16_to_float(uint16_t h) { uint32_t b = (uint32_t)h << 16; float f; memcpy(&f, &b, 4); return f; }

static inline uint16_t float_to_bf16(float f) {
    uint32_t x; memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);  // quiet NaN
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

// chk_to_f16 is defined after the dispatch (it has an AVX-512 path).
void chk_to_bf16(const float *x, long n, uint16_t *out) { for (long i = 0; i < n; i++) out[i] = float_to_bf16(x[i]); }

// MARK: - Portable kernels

static void gemv_f16_portable(const uint16_t *w, const float *x, float *y, long cols, long row0, long row1) {
    for (long r = row0; r < row1; r++) {
        const uint16_t *row = w + r * cols; float s = 0;
        for (long i = 0; i < cols; i++) s += half_to_float(row[i]) * x[i];
        y[r] = s;
    }
}

static void gemv_f32_portable(const float *w, const float *x, float *y, long cols, long row0, long row1) {
    for (long r = row0; r < row1; r++) {
        const float *row = w + r * cols; float s = 0;
        for (long i = 0; i < cols; i++) s += row[i] * x[i];
        y[r] = s;
    }
}

static void gemv_bf16_portable(const uint16_t *w, const float *x, float *y, long cols, long row0, long row1) {
    for (long r = row0; r < row1; r++) {
        const uint16_t *row = w + r * cols; float s = 0;
        for (long i = 0; i < cols; i++) s += bf16_to_float(row[i]) * x[i];
        y[r] = s;
    }
}

// Integer dot of one block of 32 weights with 32 int8 activations (natural order).
static inline int32_t block_q8(const int8_t *w, const int8_t *x) {
    int32_t acc = 0;
    for (int i = 0; i < CHK_BLOCK; i++) acc += (int32_t)w[i] * x[i];
    return acc;
}
static inline int32_t block_q4(const uint8_t *w, const int8_t *x) {
    int32_t acc = 0;
    for (int j = 0; j < 16; j++) acc += ((int32_t)(w[j] & 15) - 8) * x[j] + ((int32_t)(w[j] >> 4) - 8) * x[j + 16];
    return acc;
}

static inline int32_t block_q6(const uint8_t *row, long blocks, long b, const int8_t *x) {
    int32_t acc = 0;
    for (int e = 0; e < CHK_BLOCK; e++) acc += (q6_code(row, blocks, b, e) - 32) * x[e];
    return acc;
}

// Row by row, block by block: the block's integer dot with the activation's, times both scales.
// `dot(row, blocks, b, x)` is the integer dot of block b of a row of `blocks` blocks starting at `row`.
typedef int32_t (*block_dot)(const uint8_t *row, long blocks, long b, const int8_t *x);
static void gemv_blocks_portable(const uint8_t *q, long rowBytes, block_dot dot, const uint16_t *scales, const chk_qx *x, float *y,
                                 long cols, long row0, long row1) {
    long blocks = cols / CHK_BLOCK;
    for (long r = row0; r < row1; r++) {
        float s = 0;
        for (long b = 0; b < blocks; b++)
            s += (float)dot(q + r * rowBytes, blocks, b, x->xq + b * CHK_BLOCK) * half_to_float(scales[r * blocks + b]) * x->xs[b];
        y[r] = s;
    }
}
static int32_t row_block_q8(const uint8_t *row, long blocks, long b, const int8_t *x) {
    (void)blocks;
    return block_q8((const int8_t *)row + b * CHK_BLOCK, x);
}
static int32_t row_block_q4(const uint8_t *row, long blocks, long b, const int8_t *x) {
    (void)blocks;
    return block_q4(row + b * CHK_BLOCK / 2, x);
}
static void gemv_q8_portable(const int8_t *q, const uint16_t *scales, const chk_qx *x, float *y, long cols, long row0, long row1) {
    gemv_blocks_portable((const uint8_t *)q, cols, row_block_q8, scales, x, y, cols, row0, row1);
}
static void gemv_q4_portable(const uint8_t *q, const uint16_t *scales, const chk_qx *x, float *y, long cols, long row0, long row1) {
    gemv_blocks_portable(q, cols / 2, row_block_q4, scales, x, y, cols, row0, row1);
}
static void gemv_q6_portable(const uint8_t *q, const uint16_t *scales, const chk_qx *x, float *y, long cols, long row0, long row1) {
    gemv_blocks_portable(q, cols / CHK_BLOCK * Q6_BLOCK_BYTES, block_q6, scales, x, y, cols, row0, row1);
}

static void rows_f16_portable(const uint16_t *w, long cols, long row0, long row1, float *out) {
    for (long i = 0, n = (row1 - row0) * cols; i < n; i++) out[i] = half_to_float(w[row0 * cols + i]);
}

// MARK: - Prefetching the weights of decode products

// Decode reads every weight once per token, and the hardware streamer alone reaches about half the
// read bandwidth with the kernels' interleaved rows, so each cache line of a row is prefetched
// twice. The near prefetch (a short way ahead, below) fetches into L1; by itself it holds one of
// L1's few fill buffers for a line's whole trip from memory, which capped the products at 80–85 %
// of a plain read's rate. The far one, FAR_BYTES (weights_avx512.h) or more ahead, fetches into
// L2, whose queue is deeper, so the near one then completes from L2: 93–100 % (q4_0, 5632 × 2048,
// medians of builds alternated with a plain read of the same size between products).
//
// On AVX2 (a Zen 3) the float and q8_0 kernels prefetch only the near line (PREFETCH_NEAR): with the
// far one as well a token's f16 products were 8–14 % slower (paired, Qwen2 and TinyLlama: the read
// probe itself lost 3–12 % to such prefetches there); q8_0 level to 6 % faster without it. q4_0,
// which computes more per byte, keeps both (near alone was 1–5 % slower).
//
// How far the near one reaches: the AVX2 kernels read one row per pass, so NEAR_AHEAD bytes
// further along the row's stream, on into the next row. The AVX-512 kernels read four rows side by side, so
// their near prefetch follows each row's own stream, NEAR_AHEAD bytes ahead and on into the same
// row of the next group (PREFETCH_STREAM): the same columns of the next group, as they first did,
// put a whole group more into L1 at once, and with long rows (a down projection: four rows of
// 5632 halves are 45 KB) that evicted lines before they were read — paired runs on TinyLlama's
// f16 down projection +10 % (IQR +7–14 %), Qwen2's q8_0 +7 %, the other shapes unchanged within
// ±2 %. Scales (a few bytes a row) are still prefetched in the next group (PREFETCH_NEAR_FAR).
enum { NEAR_AHEAD = 1024 };

// Groups of rows (groupBytes each) to prefetch ahead into L2: at least FAR_BYTES, at least two.
static inline long far_groups(long groupBytes) {
    long groups = (FAR_BYTES + groupBytes - 1) / groupBytes;
    return groups < 2 ? 2 : groups;
}

// The near prefetch alone: NEAR_AHEAD bytes beyond `p`.
#define PREFETCH_NEAR(p) _mm_prefetch((const char *)(p) + NEAR_AHEAD, _MM_HINT_T0)

// The near and far prefetches of one line: `near` is the same line in the next group of rows.
#define PREFETCH_NEAR_FAR(near, farOffset)                          \
    do {                                                           \
        _mm_prefetch((const char *)(near), _MM_HINT_T0);           \
        _mm_prefetch((const char *)(near) + (farOffset), _MM_HINT_T1); \
    } while (0)

// The near and far prefetches of the line `at` bytes into `row` (rowBytes long, the first of a group
// whose other rows take `skip` bytes): near NEAR_AHEAD bytes further along the row's stream, far
// `far` bytes ahead.
#define PREFETCH_STREAM(row, at, rowBytes, skip, far)                                                    \
    do {                                                                                                 \
        long nearAt_ = (at) + NEAR_AHEAD;                                                                \
        _mm_prefetch((const char *)(row) + nearAt_ + (nearAt_ >= (rowBytes) ? (skip) : 0), _MM_HINT_T0); \
        _mm_prefetch((const char *)(row) + (at) + (far), _MM_HINT_T1);                                   \
    } while (0)

// Rows a pass of the AVX-512 decode kernels (4 or 1; pick() sets it). Intel's cores stream four
// rows side by side at 93–100 % of a plain read with the prefetches above; AMD's Zen 5 reads them
// at 0.80–0.87 of the probe whatever the prefetches (far, near, both, neither, other distances:
// within ±2 %) and one row a pass at 0.92–0.96 — paired, a token's products: TinyLlama f16 1.16×,
// q8_0 1.18×, q4_0 1.12×, Qwen2 f16 1.18× (as the AVX2 kernels found on a Zen 3). The kernels for
// several tokens take one row a pass there for two tokens (TinyLlama, kernel-ab TOKENS=2: f16
// 1.06–1.07×, q4_0 1.09×) and four rows for more: f16 at 4 tokens 1.31× faster with four (its
// tokens go two a group, so one row a pass reads each row twice), q4_0 at 3–4 tokens within the
// noise (0.86–1.38 in four pairings), and at 8 tokens four rows sharing each activation load ran
// 1.65× (q4_0) and 1.83× (f16) faster.
static int decode_rows_per_pass = 4, forced_decode_rows;

// A product by groups of four rows (ROWS inlined with NR = 4; with decode_rows_per_pass 1 none), then
// the rows left one at a time: the AVX-512 decode kernels, float (GEMV_BY_FOURS) and quantized (GEMVQ_BY_FOURS).
#define GEMV_BY_FOURS(TARGET, NAME, T, ROWS)                                                           \
    TARGET static void NAME(const T *w, const float *x, float *y, long cols, long row0, long row1) {   \
        long r = row0;                                                                                 \
        if (decode_rows_per_pass == 4)                                                                 \
            for (; r + 4 <= row1; r += 4) ROWS(w, x, 0, y, 0, cols, r, 4, 1);                          \
        for (; r < row1; r++) ROWS(w, x, 0, y, 0, cols, r, 1, 1);                                      \
    }
#define GEMVQ_BY_FOURS(TARGET, NAME, T, ROWS)                                                          \
    TARGET static void NAME(const T *q, const uint16_t *scales, const chk_qx *x, float *y, long cols, long row0, long row1) { \
        long r = row0;                                                                                 \
        if (decode_rows_per_pass == 4)                                                                 \
            for (; r + 4 <= row1; r += 4) ROWS(q, scales, x, y, 0, cols, r, 4, 1);                     \
        for (; r < row1; r++) ROWS(q, scales, x, y, 0, cols, r, 1, 1);                                 \
    }
// The same for `tokens` activations (row t of y at y + t·ldy): each group of rows against up to four
// tokens at a time, so that a group's weights are unpacked once for four tokens.
#define GEMVQ_TOKEN_GROUPS(ROWS, q, scales, x, tokens, y, ldy, cols, r, NR)                            \
    for (long t0 = 0; t0 < (tokens); t0 += 4) {                                                       \
        const chk_qx *x_ = (x) + t0; float *y_ = (y) + t0 * (ldy);                                     \
        switch ((tokens) - t0) {                                                                       \
        case 1: ROWS(q, scales, x_, y_, ldy, cols, r, NR, 1); break;                                   \
        case 2: ROWS(q, scales, x_, y_, ldy, cols, r, NR, 2); break;                                   \
        case 3: ROWS(q, scales, x_, y_, ldy, cols, r, NR, 3); break;                                   \
        default: ROWS(q, scales, x_, y_, ldy, cols, r, NR, 4); break;                                  \
        }                                                                                              \
    }
// Float weights: two tokens at a time (four rows × two tokens × two accumulators fill half the
// registers), x's row t at x + t·ldx.
#define GEMV_TOKEN_GROUPS(ROWS, w, x, ldx, tokens, y, ldy, cols, r, NR)                                \
    for (long t0 = 0; t0 < (tokens); t0 += 2) {                                                       \
        if ((tokens) - t0 == 1) ROWS(w, (x) + t0 * (ldx), ldx, (y) + t0 * (ldy), ldy, cols, r, NR, 1); \
        else ROWS(w, (x) + t0 * (ldx), ldx, (y) + t0 * (ldy), ldy, cols, r, NR, 2);                   \
    }
#define GEMV_TOKENS(TARGET, NAME, T, ROWS)                                                             \
    TARGET static void NAME(const T *w, const float *x, long ldx, long tokens, float *y, long ldy, long cols, long row0, \
                            long row1) {                                                               \
        long r = row0;                                                                                 \
        if (decode_rows_per_pass == 4 || tokens > 2)                                                   \
            for (; r + 4 <= row1; r += 4) GEMV_TOKEN_GROUPS(ROWS, w, x, ldx, tokens, y, ldy, cols, r, 4); \
        for (; r < row1; r++) GEMV_TOKEN_GROUPS(ROWS, w, x, ldx, tokens, y, ldy, cols, r, 1);          \
    }
#define GEMVQ_TOKENS(TARGET, NAME, T, ROWS)                                                            \
    TARGET static void NAME(const T *q, const uint16_t *scales, const chk_qx *x, long tokens, float *y, long ldy, long cols, \
                            long row0, long row1) {                                                    \
        long r = row0;                                                                                 \
        if (decode_rows_per_pass == 4 || tokens > 2)                                                   \
            for (; r + 4 <= row1; r += 4) GEMVQ_TOKEN_GROUPS(ROWS, q, scales, x, tokens, y, ldy, cols, r, 4); \
        for (; r < row1; r++) GEMVQ_TOKEN_GROUPS(ROWS, q, scales, x, tokens, y, ldy, cols, r, 1);      \
    }

// MARK: - AVX2 (+FMA, F16C)

AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float f32_to_float(float v) { return v; }

// Decode products on AVX2 read one row per pass: on a Zen 3 (this machine kind since 2026-11-30)
// four rows side by side, as the AVX-512 kernels read them, streamed from memory 14–42 % slower
// (paired, a Qwen2 token's products: q8_0 1.42–1.55×, f16 1.16× in favour of one row; q4_0 0.83
// against 0.94 of the probe), though from cache they were level or faster. Each line of a row is
// prefetched NEAR_AHEAD bytes further along the stream (on into the next row), and for q4_0 also
// FAR_BYTES or more ahead into L2 (PREFETCH_STREAM with one row a group; see above); without
// prefetches a q4_0 token's products ran at 0.40 of the probe.

// One row at a time, 16 columns per step with two accumulators; LOAD8 widens 8 stored values to
// floats, SCALAR one.
#define GEMV_AVX2(NAME, T, LOAD8, SCALAR)                                                              \
    AVX2 static void NAME(const T *w, const float *x, float *y, long cols, long row0, long row1) {     \
        for (long r = row0; r < row1; r++) {                                                           \
            const T *row = w + r * cols;                                                               \
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                 \
            long i = 0;                                                                                \
            for (; i + 16 <= cols; i += 16) {                                                          \
                if ((i * (long)sizeof(T)) % 64 == 0) PREFETCH_NEAR(row + i);                           \
                a0 = _mm256_fmadd_ps(LOAD8(row + i), _mm256_loadu_ps(x + i), a0);                      \
                a1 = _mm256_fmadd_ps(LOAD8(row + i + 8), _mm256_loadu_ps(x + i + 8), a1);              \
            }                                                                                          \
            float s = hsum256(_mm256_add_ps(a0, a1));                                                  \
            for (; i < cols; i++) s += SCALAR(row[i]) * x[i];                                          \
            y[r] = s;                                                                                  \
        }                                                                                              \
    }
GEMV_AVX2(gemv_f32_avx2, float, f32x8, f32_to_float)
GEMV_AVX2(gemv_f16_avx2, uint16_t, f16x8, half_to_float)
GEMV_AVX2(gemv_bf16_avx2, uint16_t, bf16x8, bf16_to_float)

// One float16 scale with the F16C instruction (the portable converter branches).
AVX2 static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// Eight lanes of the float scales s spread over the int32 lanes of a pair of blocks: lanes 0-3
// block 2k's scale, 4-7 block 2k+1's.
AVX2 static inline __m256 pair_scales(__m256 s, int k) {
    return _mm256_permutevar8x32_ps(s, _mm256_set_epi32(2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k, 2 * k, 2 * k, 2 * k));
}

// Signed int8 dot of 32 pairs into 8 int32 lanes: |w| (unsigned) times x with w's sign (q8_0's
// bytes cover −127...127, so |w|·x pairs stay within vpmaddubsw's int16).
AVX2 static inline __m256i dot32_avx2(__m256i w, __m256i x) {
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

// q8_0 a row at a time, a block a step, eight blocks' scales converted at once (a last few one by one).
AVX2 static void gemv_q8_avx2(const int8_t *q, const uint16_t *scales, const chk_qx *qx, float *y, long cols, long row0, long row1) {
    const long blocks = cols / CHK_BLOCK;
    for (long r = row0; r < row1; r++) {
        const int8_t *row = q + r * cols; const uint16_t *sc = scales + r * blocks;
        __m256 acc = _mm256_setzero_ps();
        long b = 0;
        for (; b + 8 <= blocks; b += 8) {
            for (long line = 0; line < 256; line += 64) PREFETCH_NEAR(row + b * 32 + line);
            _mm_prefetch((const char *)(sc + b + blocks), _MM_HINT_T0);  // the next row's scales
            float s[8];  // the scales, stored so that each is broadcast by a load (a permute per block cost more)
            _mm256_storeu_ps(s, _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + b))), _mm256_loadu_ps(qx->xs + b)));
            for (int k = 0; k < 8; k++) {
                __m256i d = dot32_avx2(_mm256_loadu_si256((const __m256i *)(row + (b + k) * 32)),
                                       _mm256_loadu_si256((const __m256i *)(qx->xq + (b + k) * 32)));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_broadcast_ss(&s[k]), acc);
            }
        }
        for (; b < blocks; b++) {  // the last blocks short of eight (Qwen2's 896 columns end in four)
            __m256i d = dot32_avx2(_mm256_loadu_si256((const __m256i *)(row + b * 32)), _mm256_loadu_si256((const __m256i *)(qx->xq + b * 32)));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(h2f(sc[b]) * qx->xs[b]), acc);
        }
        y[r] = hsum256(acc);
    }
}

// q4_0 with the raw nibbles n = w + 8 as vpmaddubsw's unsigned operand (no sign moves; n·x pairs
// stay within int16) against the activation's x4 order, each lane starting from the c4 correction
// (−8·Σx over its bytes), as the VNNI kernel does (see "Quantized rows with VNNI"): 32 weight
// bytes are two blocks, their low nibbles (elements 0-15) and high (16-31) two registers whose
// products add into the same lanes (lanes 0-3 the first block, 4-7 the second). From cache, one
// thread: 9.5 → 15–20 GB/s against the sign-moving kernel with a block a step.
AVX2 static inline __m256i q4_pair_dot(const uint8_t *w, const chk_qx *qx, long pair) {
    const __m256i nibble = _mm256_set1_epi8(15);
    const long four = pair / 2, half = pair % 2;
    __m256i v = _mm256_loadu_si256((const __m256i *)w);
    __m256i lo = _mm256_and_si256(v, nibble), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
    __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(qx->x4 + four * 128 + half * 32))),
                                 _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(qx->x4 + four * 128 + 64 + half * 32))));
    return _mm256_add_epi32(_mm256_madd_epi16(p, _mm256_set1_epi16(1)), _mm256_loadu_si256((const __m256i *)(qx->c4 + pair * 8)));
}

// A pair of q6_0 blocks (48 bytes, see q6_blocks.h) as q4_pair_dot takes two q4_0 blocks: the
// codes (0...63) as vpmaddubsw's unsigned operand against x4, each lane starting from −32·Σx (4·c4).
// The top two bits of each element, from the 16 bytes after the nibbles (in both halves of a
// register), are moved to bits 4-5 by one shift per register whose count is per 64-bit lane:
// A_j's bits 0-1 and B_j's 2-3 left by 4 and 2 for elements 0-15, A_{j+16}'s 4-5 and B_{j+16}'s 6-7
// right by 0 and 2 for 16-31 (bits shifted in from neighbouring bytes are masked off). Codes ≤ 63:
// the two halves' pair sums add within int16 (2 · 2 · 63 · 127 < 32768).
AVX2 static inline __m256i q6_pair_dot(const uint8_t *w, const chk_qx *qx, long pair) {
    const __m256i nibble = _mm256_set1_epi8(15), topBits = _mm256_set1_epi8(0x30);
    const long four = pair / 2, half = pair % 2;
    __m256i v = _mm256_loadu_si256((const __m256i *)w);
    __m256i top = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(w + 32)));
    __m256i lo = _mm256_or_si256(_mm256_and_si256(v, nibble), _mm256_and_si256(_mm256_sllv_epi64(top, _mm256_set_epi64x(2, 2, 4, 4)), topBits));
    __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), nibble),
                                 _mm256_and_si256(_mm256_srlv_epi64(top, _mm256_set_epi64x(2, 2, 0, 0)), topBits));
    __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(qx->x4 + four * 128 + half * 32))),
                                 _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(qx->x4 + four * 128 + 64 + half * 32))));
    __m256i correction = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(qx->c4 + pair * 8)), 2);
    return _mm256_add_epi32(_mm256_madd_epi16(p, _mm256_set1_epi16(1)), correction);
}

// q4_0 or q6_0 (`six`, a constant after inlining) a row at a time, eight blocks (four pairs) a
// step, or a last four; x4 covers whole fours, the blocks past them are scalar.
AVX2 static inline __attribute__((always_inline)) void gemv_pairs_avx2(const int six, const uint8_t *q, const uint16_t *scales,
                                                                        const chk_qx *qx, float *y, long cols, long row0, long row1) {
    const long blocks = cols / CHK_BLOCK, blockBytes = six ? Q6_BLOCK_BYTES : 16, rowBytes = blocks * blockBytes;
    const long far = far_groups(rowBytes + blocks * 2) - 1, farBytes = (far + 1) * rowBytes, farScales = far * blocks * 2;
    for (long r = row0; r < row1; r++) {
        const uint8_t *row = q + r * rowBytes; const uint16_t *sc = scales + r * blocks;
        __m256 acc = _mm256_setzero_ps();
        long b = 0;
        for (; b + 4 <= blocks; b += 8) {
            const int pairs = b + 8 <= blocks ? 4 : 2;
            // the step's lines: q4_0 128 or 64 bytes, q6_0 192 or 96 (written out: a loop cost q4_0 2-4 %)
            PREFETCH_STREAM(row, b * blockBytes, rowBytes, 0, farBytes);
            if (pairs == 4 || six) PREFETCH_STREAM(row, b * blockBytes + 64, rowBytes, 0, farBytes);
            if (pairs == 4 && six) PREFETCH_STREAM(row, b * blockBytes + 128, rowBytes, 0, farBytes);
            PREFETCH_NEAR_FAR(sc + b + blocks, farScales);
            __m128i h = pairs == 4 ? _mm_loadu_si128((const __m128i *)(sc + b)) : _mm_loadl_epi64((const __m128i *)(sc + b));
            __m256 xs = pairs == 4 ? _mm256_loadu_ps(qx->xs + b) : _mm256_castps128_ps256(_mm_loadu_ps(qx->xs + b));
            __m256 s = _mm256_mul_ps(_mm256_cvtph_ps(h), xs);
            for (int k = 0; k < pairs; k++) {
                const uint8_t *pair = row + (b + 2 * k) * blockBytes;
                __m256i d = six ? q6_pair_dot(pair, qx, b / 2 + k) : q4_pair_dot(pair, qx, b / 2 + k);
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), pair_scales(s, k), acc);
            }
            if (pairs == 2) { b += 4; break; }
        }
        float s = hsum256(acc);
        for (; b < blocks; b++)
            s += (float)(six ? block_q6(row, blocks, b, qx->xq + b * 32) : block_q4(row + b * 16, qx->xq + b * 32)) * h2f(sc[b]) * qx->xs[b];
        y[r] = s;
    }
}

AVX2 static void gemv_q4_avx2(const uint8_t *q, const uint16_t *scales, const chk_qx *qx, float *y, long cols, long row0, long row1) {
    gemv_pairs_avx2(0, q, scales, qx, y, cols, row0, row1);
}
AVX2 static void gemv_q6_avx2(const uint8_t *q, const uint16_t *scales, const chk_qx *qx, float *y, long cols, long row0, long row1) {
    gemv_pairs_avx2(1, q, scales, qx, y, cols, row0, row1);
}

AVX2 static void rows_f16_avx2(const uint16_t *w, long cols, long row0, long row1, float *out) {
    long n = (row1 - row0) * cols, i = 0; const uint16_t *src = w + row0 * cols;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, f16x8(src + i));
    for (; i < n; i++) out[i] = half_to_float(src[i]);
}

// MARK: - AVX-512 (F, BW, VL, VNNI)

// Decode products: four rows per pass (each activation load feeds four rows), independent
// accumulators, and the two prefetches above per line.

// NR (1..4) rows from `r` against NT (1..2) tokens (both constants after inlining; token t's x at
// x + t·ldx, its results at y + t·ldy), 32 columns per step with two accumulators per row and
// token. Each step's weights are loaded (and widened) once for the tokens; each token's sums take
// the same steps whatever NT is.
#define GEMV_ROWS_AVX512(NAME, T, LOAD16, TAIL16)                                                      \
    AVX512 static inline __attribute__((always_inline)) void NAME(const T *w, const float *x, long ldx, float *y, long ldy, \
                                                                 long cols, long r, const int NR, const int NT) { \
        const T *row[4];                                                                               \
        __m512 a[4][2][2];                                                                             \
        for (int j = 0; j < NR; j++) {                                                                 \
            row[j] = w + (r + j) * cols;                                                               \
            for (int t = 0; t < NT; t++) a[j][t][0] = a[j][t][1] = _mm512_setzero_ps();               \
        }                                                                                              \
        const long rowBytes = cols * (long)sizeof(T), far = far_groups(NR * rowBytes) * NR * rowBytes; \
        long i = 0;                                                                                    \
        for (; i + 32 <= cols; i += 32) {                                                              \
            __m512 x0[2], x1[2];                                                                       \
            for (int t = 0; t < NT; t++) { x0[t] = _mm512_loadu_ps(x + t * ldx + i); x1[t] = _mm512_loadu_ps(x + t * ldx + i + 16); } \
            for (int j = 0; j < NR; j++) {                                                             \
                for (long line = 0; line < 32 * (long)sizeof(T); line += 64)                          \
                    PREFETCH_STREAM(row[j], i * (long)sizeof(T) + line, rowBytes, (NR - 1) * rowBytes, far); \
                __m512 w0 = LOAD16(row[j] + i), w1 = LOAD16(row[j] + i + 16);                          \
                for (int t = 0; t < NT; t++) {                                                         \
                    a[j][t][0] = _mm512_fmadd_ps(w0, x0[t], a[j][t][0]);                               \
                    a[j][t][1] = _mm512_fmadd_ps(w1, x1[t], a[j][t][1]);                               \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
        for (; i < cols; i += 16) {                                                                    \
            __mmask16 m = first_lanes(cols - i);                                                       \
            for (int j = 0; j < NR; j++) {                                                             \
                __m512 w0 = TAIL16(row[j] + i, m);                                                     \
                for (int t = 0; t < NT; t++) a[j][t][0] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + t * ldx + i), a[j][t][0]); \
            }                                                                                          \
        }                                                                                              \
        for (int j = 0; j < NR; j++)                                                                   \
            for (int t = 0; t < NT; t++) y[t * ldy + r + j] = _mm512_reduce_add_ps(_mm512_add_ps(a[j][t][0], a[j][t][1])); \
    }
GEMV_ROWS_AVX512(rows4_f32_avx512, float, f32x16, f32x16_tail)
GEMV_ROWS_AVX512(rows4_f16_avx512, uint16_t, f16x16, f16x16_tail)
GEMV_ROWS_AVX512(rows4_bf16_avx512, uint16_t, bf16x16, bf16x16_tail)

GEMV_BY_FOURS(AVX512, gemv_f32_avx512, float, rows4_f32_avx512)
GEMV_BY_FOURS(AVX512, gemv_f16_avx512, uint16_t, rows4_f16_avx512)
GEMV_BY_FOURS(AVX512, gemv_bf16_avx512, uint16_t, rows4_bf16_avx512)
GEMV_TOKENS(AVX512, gemv_f32_tokens_avx512, float, rows4_f32_avx512)
GEMV_TOKENS(AVX512, gemv_f16_tokens_avx512, uint16_t, rows4_f16_avx512)
GEMV_TOKENS(AVX512, gemv_bf16_tokens_avx512, uint16_t, rows4_bf16_avx512)

// Quantized rows with VNNI. vpdpbusd multiplies unsigned by signed bytes, so instead of moving
// signs around per row, the weights are made unsigned — q8_0 as w + 128 (one xor), q4_0 as its raw
// nibble n = w + 8 — and the surplus (128·Σx or 8·Σx over the lane's bytes) is subtracted by
// starting each lane's sum at a correction computed once per token (chk_prepare_qx). The per-lane
// float scale (weight scale × activation scale) comes from eight scales converted at once and
// spread over the lanes by one permute.
//
// q8_0: a 512-bit register covers two blocks. q4_0: 64 bytes are four blocks; their low nibbles
// (elements 0-15 of each block) and high nibbles (16-31) are two registers whose products go into
// the same lanes, so four blocks cost one load, three ops to unpack, two vpdpbusd and one scaling.
// The activation is stored in that order (`x4`: per four blocks, elements 0-15 of each, then
// 16-31 of each) once per token.

AVX512 static inline __m512i q8_unsigned64(const int8_t *p) {
    return _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_set1_epi8((char)0x80));
}

// NR rows (1..4) × cols of q8_0 against NT (1..4) prepared activations, row r + j's product with
// token t into y[t·ldy + r + j] (each token's sums take the same steps whatever NT is).
AVX512 static inline __attribute__((always_inline)) void rows_q8_avx512(
    const int8_t *q, const uint16_t *scales, const chk_qx *qx, float *y, long ldy, long cols, long r, const int NR, const int NT) {
    const long blocks = cols / CHK_BLOCK;
    const int8_t *row[4]; const uint16_t *sc[4];
    __m512 acc[4][4];
    for (int j = 0; j < NR; j++) {
        row[j] = q + (r + j) * cols; sc[j] = scales + (r + j) * blocks;
        for (int t = 0; t < NT; t++) acc[j][t] = _mm512_setzero_ps();
    }
    // Lane → block of a pair (lanes 0-7 the first, 8-15 the second); + 2k selects pair k of eight blocks.
    const __m512i l0 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512i lanes[4];
    for (int k = 0; k < 4; k++) lanes[k] = _mm512_add_epi32(l0, _mm512_set1_epi32(2 * k));
    const long far = (far_groups(NR * (cols + blocks * 2)) - 1) * NR, farBytes = (far + NR) * cols, farScales = far * blocks * 2;
    long b = 0;
    for (; b + 8 <= blocks; b += 8) {  // eight blocks: four pairs
        for (int j = 0; j < NR; j++) {
            // Every line of the span further along the row (see above), and its scales in the next groups.
            for (long line = 0; line < 256; line += 64) PREFETCH_STREAM(row[j], b * 32 + line, cols, (NR - 1) * cols, farBytes);
            PREFETCH_NEAR_FAR(sc[j] + b + NR * blocks, farScales);
            __m256 wscale = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc[j] + b)));
            __m512 s[4];
            for (int t = 0; t < NT; t++) s[t] = _mm512_castps256_ps512(_mm256_mul_ps(wscale, _mm256_loadu_ps(qx[t].xs + b)));
            for (int k = 0; k < 4; k++) {
                const long pair = b / 2 + k;
                __m512i w = q8_unsigned64(row[j] + pair * 64);
                for (int t = 0; t < NT; t++) {
                    __m512i d = _mm512_dpbusd_epi32(_mm512_loadu_si512(qx[t].c8 + pair * 16), w, _mm512_loadu_si512(qx[t].xq + pair * 64));
                    acc[j][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_permutexvar_ps(lanes[k], s[t]), acc[j][t]);
                }
            }
        }
    }
    for (; b + 2 <= blocks; b += 2) {  // remaining pairs (their lines prefetched too: Qwen2's 896 columns end in two)
        const long pair = b / 2;
        for (int j = 0; j < NR; j++) {
            PREFETCH_STREAM(row[j], pair * 64, cols, (NR - 1) * cols, farBytes);
            PREFETCH_NEAR_FAR(sc[j] + b + NR * blocks, farScales);
            __m512i w = q8_unsigned64(row[j] + pair * 64);
            for (int t = 0; t < NT; t++) {
                __m256 s2 = _mm256_set_ps(0, 0, 0, 0, 0, 0, _cvtsh_ss(sc[j][b + 1]) * qx[t].xs[b + 1], _cvtsh_ss(sc[j][b]) * qx[t].xs[b]);
                __m512i d = _mm512_dpbusd_epi32(_mm512_loadu_si512(qx[t].c8 + pair * 16), w, _mm512_loadu_si512(qx[t].xq + pair * 64));
                acc[j][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_permutexvar_ps(l0, _mm512_castps256_ps512(s2)), acc[j][t]);
            }
        }
    }
    for (int j = 0; j < NR; j++)
        for (int t = 0; t < NT; t++) {
            float s = _mm512_reduce_add_ps(acc[j][t]);
            for (long i = b; i < blocks; i++) s += block_q8(row[j] + i * 32, qx[t].xq + i * 32) * _cvtsh_ss(sc[j][i]) * qx[t].xs[i];
            y[t * ldy + r + j] = s;
        }
}

// q4_0 unpacks each byte into its low and high nibble; the high one takes a shift and a mask,
// both on the vector port the dot products use, or with GFNI one affine op (a bit matrix that
// moves bits 4-7 to 0-3): from cache, one core's q4_0 product runs 8-11 % faster with it
// (Qwen2's 896 columns 35.7 → 38.4 GB/s, 5632 columns 41.3 → 45.9).
#define AVX512_GFNI __attribute__((target("gfni,avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,fma,f16c,avx2")))
#define Q4_NAME(x) x
#define Q4_TARGET AVX512
#define Q4_HIGH_NIBBLES(v) _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble)
#include "q4_avx512.h"
#undef Q4_NAME
#undef Q4_TARGET
#undef Q4_HIGH_NIBBLES
#define Q4_NAME(x) x##_gfni
#define Q4_TARGET AVX512_GFNI
#define Q4_HIGH_NIBBLES(v) _mm512_gf2p8affine_epi64_epi8(v, _mm512_set1_epi64(0x1020408000000000LL), 0)
#include "q4_avx512.h"

GEMVQ_BY_FOURS(AVX512, gemv_q8_avx512, int8_t, rows_q8_avx512)
GEMVQ_TOKENS(AVX512, gemv_q8_tokens_avx512, int8_t, rows_q8_avx512)

// A cache line of halves a step, the line FAR_BYTES ahead prefetched into L2: widened matrices and
// float16 KV caches are read from memory. The prefetch runs on past the range's end (a prefetch
// never faults): callers widen ranges shorter than FAR_BYTES one after the next (a matrix's
// tiles), which bounded to the range were never prefetched at all (when decode attention still
// widened each float16 span this way, paired in kernel-ab: +8–11 %).
AVX512 static void rows_f16_avx512(const uint16_t *w, long cols, long row0, long row1, float *out) {
    long n = (row1 - row0) * cols, i = 0; const uint16_t *src = w + row0 * cols;
    const long far = FAR_BYTES / 2;
    for (; i + 32 <= n; i += 32) {
        _mm_prefetch((const char *)(src + i + far), _MM_HINT_T1);
        _mm512_storeu_ps(out + i, f16x16(src + i));
        _mm512_storeu_ps(out + i + 16, f16x16(src + i + 16));
    }
    for (; i < n; i += 16) {
        __mmask16 m = first_lanes(n - i);
        _mm512_mask_storeu_ps(out + i, m, f16x16_tail(src + i, m));
    }
}

// MARK: - Activation quantization

// Per block of 32: scale amax/127, values rounded to nearest even (lrintf and vcvtps2dq agree).
// A block holding a NaN or an infinity gets a NaN scale (its codes then count for nothing; here
// zeros, since converting a NaN to an integer is undefined in C), so every product it enters is NaN,
// as in float32 arithmetic — not a code standing in for the value (vmaxps and fmaxf skip NaNs, and
// vcvtps2dq turns one into −128 after saturation).
static void quantize_x_portable(const float *x, long n, int8_t *q, float *scales) {
    for (long b = 0; b < n / CHK_BLOCK; b++) {
        const float *src = x + b * 32; float amax = 0; int finite = 1;
        for (int i = 0; i < 32; i++) { amax = fmaxf(amax, fabsf(src[i])); finite &= isfinite(src[i]) != 0; }
        float d = finite ? amax / 127 : NAN, id = d > 0 ? 1 / d : 0;
        scales[b] = d;
        for (int i = 0; i < 32; i++) q[b * 32 + i] = finite ? (int8_t)lrintf(src[i] * id) : 0;
    }
}

// The same with AVX2: four vectors a block, packed to bytes (the packs interleave 128-bit lanes,
// so a permute puts the four-byte groups back in order).
AVX2 static void quantize_x_avx2(const float *x, long n, int8_t *q, float *scales) {
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (long b = 0; b < n / CHK_BLOCK; b++) {
        __m256 v[4], m = _mm256_setzero_ps();
        int nonFinite = 0;
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + b * 32 + 8 * k);
            __m256 a = _mm256_and_ps(v[k], magnitude);
            nonFinite |= _mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(INFINITY), _CMP_NLT_UQ));
            m = _mm256_max_ps(a, m);
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        float amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
        float d = nonFinite ? NAN : amax / 127, id = d > 0 ? 1 / d : 0;  // (a NaN or infinity: see quantize_x_portable)
        scales[b] = d;
        __m256 vid = _mm256_set1_ps(id);
        __m256i i[4];
        for (int k = 0; k < 4; k++) i[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));
        __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        _mm256_storeu_si256((__m256i *)(q + b * 32), _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
}

AVX512 static void quantize_x_avx512(const float *x, long n, int8_t *q, float *scales) {
    for (long b = 0; b < n / CHK_BLOCK; b++) {
        __m512 v0 = _mm512_loadu_ps(x + b * 32), v1 = _mm512_loadu_ps(x + b * 32 + 16), a0 = _mm512_abs_ps(v0), a1 = _mm512_abs_ps(v1);
        __m512 inf = _mm512_set1_ps(INFINITY);
        int nonFinite = (_mm512_cmp_ps_mask(a0, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(a1, inf, _CMP_NLT_UQ)) != 0;
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
        float d = nonFinite ? NAN : amax / 127, id = d > 0 ? 1 / d : 0;  // (a NaN or infinity: see quantize_x_portable)
        scales[b] = d;
        __m512 vid = _mm512_set1_ps(id);
        _mm_storeu_si128((__m128i *)(q + b * 32), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, vid))));
        _mm_storeu_si128((__m128i *)(q + b * 32 + 16), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, vid))));
    }
}

// float32 → float16 sixteen at a time (vcvtps2ph rounds to nearest even, subnormals included, as
// float_to_half does); NaNs are written as float_to_half writes them: quiet, without payload.
AVX512 static void to_f16_avx512(const float *x, long n, uint16_t *out) {
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = first_lanes(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256i sign = _mm256_and_si256(_mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16)), _mm256_set1_epi16((short)0x8000));
        h = _mm256_mask_blend_epi16(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), h, _mm256_or_si256(sign, _mm256_set1_epi16(0x7e00)));
        _mm256_mask_storeu_epi16(out + i, m, h);
    }
}

// The other forms of a quantized activation (chk_qx) from its bytes xq, from element `from` (a
// multiple of 128) on: c8 covers whole pairs of blocks, x4 and c4 whole fours (the kernels do
// trailing blocks with xq).
static void qx_layouts_portable(const int8_t *xq, long n, long from, int8_t *x4, int32_t *c8, int32_t *c4) {
    for (long lane = from / 4; lane < n / 64 * 16; lane++) {
        int32_t sum = 0;
        for (int i = 0; i < 4; i++) sum += xq[lane * 4 + i];
        c8[lane] = -128 * sum;
    }
    for (long four = from / 128; four < n / 128; four++) {
        const int8_t *src = xq + four * 128; int8_t *dst = x4 + four * 128;
        for (int block = 0; block < 4; block++) {
            memcpy(dst + block * 16, src + block * 32, 16);
            memcpy(dst + 64 + block * 16, src + block * 32 + 16, 16);
        }
        for (int lane = 0; lane < 16; lane++) {  // lane l's bytes: 4l..4l+3 of both halves
            int32_t sum = 0;
            for (int i = 0; i < 4; i++) sum += dst[lane * 4 + i] + dst[64 + lane * 4 + i];
            c4[four * 16 + lane] = -8 * sum;
        }
    }
}

// The same with AVX2: byte sums of four by vpmaddubsw against ones and vpmaddwd (the scalar sums
// and the lrintf calls of quantize_x_portable took 19–22 µs to prepare a 4864-wide activation on
// the Zen 3, 4 % of a Qwen2-0.5B q4_0 token; with these and quantize_x_avx2 about 2 µs).
AVX2 static void qx_layouts_avx2(const int8_t *xq, long n, long from, int8_t *x4, int32_t *c8, int32_t *c4) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1), zero = _mm256_setzero_si256();
    for (long lane = from / 4; lane < n / 64 * 16; lane += 8) {  // eights: both ends are multiples of 16 lanes
        __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)(xq + lane * 4))), ones16);
        _mm256_storeu_si256((__m256i *)(c8 + lane), _mm256_sub_epi32(zero, _mm256_slli_epi32(sums, 7)));
    }
    for (long four = from / 128; four < n / 128; four++) {
        const int8_t *src = xq + four * 128; int8_t *dst = x4 + four * 128;
        for (int block = 0; block < 4; block++) {
            memcpy(dst + block * 16, src + block * 32, 16);
            memcpy(dst + 64 + block * 16, src + block * 32 + 16, 16);
        }
        for (int h = 0; h < 2; h++) {  // lanes 8h ... 8h+7: bytes 32h ... 32h+31 of both halves
            __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)(dst + 32 * h))),
                                             _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)(dst + 64 + 32 * h))));
            _mm256_storeu_si256((__m256i *)(c4 + four * 16 + 8 * h), _mm256_sub_epi32(zero, _mm256_slli_epi32(_mm256_madd_epi16(pairs, ones16), 3)));
        }
    }
}

// Four blocks at a time: the lanes' byte sums by vpdpbusd against ones, the halves of x4 as
// 128-bit lanes picked from the two registers (the scalar loops above were two thirds of preparing
// a 4864-wide activation: 2.9 µs).
AVX512 static void qx_layouts_avx512(const int8_t *xq, long n, long from, int8_t *x4, int32_t *c8, int32_t *c4) {
    const __m512i ones = _mm512_set1_epi8(1), zero = _mm512_setzero_si512();
    long i = from;
    for (; i + 128 <= n; i += 128) {
        __m512i a = _mm512_loadu_si512(xq + i), b = _mm512_loadu_si512(xq + i + 64);
        _mm512_storeu_si512(c8 + i / 4, _mm512_sub_epi32(zero, _mm512_slli_epi32(_mm512_dpbusd_epi32(zero, ones, a), 7)));
        _mm512_storeu_si512(c8 + i / 4 + 16, _mm512_sub_epi32(zero, _mm512_slli_epi32(_mm512_dpbusd_epi32(zero, ones, b), 7)));
        __m512i low = _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(2, 0, 2, 0)), high = _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        _mm512_storeu_si512(x4 + i, low);
        _mm512_storeu_si512(x4 + i + 64, high);
        __m512i sums = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, ones, low), ones, high);
        _mm512_storeu_si512(c4 + i / 8, _mm512_sub_epi32(zero, _mm512_slli_epi32(sums, 3)));
    }
    qx_layouts_portable(xq, n, i, x4, c8, c4);
}

// MARK: - Dispatch

typedef void (*gemv16_fn)(const uint16_t *, const float *, float *, long, long, long);
typedef void (*gemv32_fn)(const float *, const float *, float *, long, long, long);
typedef void (*gemvq8_fn)(const int8_t *, const uint16_t *, const chk_qx *, float *, long, long, long);
typedef void (*gemvq4_fn)(const uint8_t *, const uint16_t *, const chk_qx *, float *, long, long, long);
typedef void (*tokens16_fn)(const uint16_t *, const float *, long, long, float *, long, long, long, long);
typedef void (*tokens32_fn)(const float *, const float *, long, long, float *, long, long, long, long);
typedef void (*tokensq8_fn)(const int8_t *, const uint16_t *, const chk_qx *, long, float *, long, long, long, long);
typedef void (*tokensq4_fn)(const uint8_t *, const uint16_t *, const chk_qx *, long, float *, long, long, long, long);
typedef void (*prepare_fn)(const float *, long, int8_t *, float *);
typedef void (*layouts_fn)(const int8_t *, long, long, int8_t *, int32_t *, int32_t *);
typedef void (*rows16_fn)(const uint16_t *, long, long, long, float *);

static struct {
    int chosen, avx512, avx2; const char *variant;
    gemv32_fn f32; gemv16_fn f16, bf16; gemvq8_fn q8; gemvq4_fn q4, q6; rows16_fn rows_f16; prepare_fn quantize_x; layouts_fn qx_layouts;
    // several tokens at once (AVX-512 only; else NULL)
    tokens32_fn f32_tokens; tokens16_fn f16_tokens, bf16_tokens; tokensq8_fn q8_tokens; tokensq4_fn q4_tokens, q6_tokens;
} K;
static int forced_portable, forced_avx2, forced_no_gfni;

// What the AVX2 kernels use (the decode products' F16C conversions, the GEMM's FMA).
static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

static void pick(void) {
    if (K.chosen) return;
    __builtin_cpu_init();
    int avx2 = cpu_has_avx2();
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512dq");
    if (forced_portable) { avx2 = 0; avx512 = 0; }
    if (forced_avx2) avx512 = 0;
    K.avx512 = avx512;
    K.avx2 = avx2 && !avx512;
    decode_rows_per_pass = forced_decode_rows ? forced_decode_rows : __builtin_cpu_is("amd") ? 1 : 4;
    K.f32_tokens = NULL; K.f16_tokens = NULL; K.bf16_tokens = NULL; K.q8_tokens = NULL; K.q4_tokens = NULL; K.q6_tokens = NULL;
    if (avx512) {
        K.variant = "avx512"; K.f32 = gemv_f32_avx512; K.f16 = gemv_f16_avx512; K.bf16 = gemv_bf16_avx512; K.q8 = gemv_q8_avx512; K.q4 = gemv_q4_avx512; K.q6 = gemv_q6_avx512;
        K.rows_f16 = rows_f16_avx512; K.quantize_x = quantize_x_avx512; K.qx_layouts = qx_layouts_avx512;
        K.f32_tokens = gemv_f32_tokens_avx512; K.f16_tokens = gemv_f16_tokens_avx512; K.bf16_tokens = gemv_bf16_tokens_avx512;
        K.q8_tokens = gemv_q8_tokens_avx512; K.q4_tokens = gemv_q4_tokens_avx512; K.q6_tokens = gemv_q6_tokens_avx512;
        if (__builtin_cpu_supports("gfni") && !forced_no_gfni) {
            K.q4 = gemv_q4_avx512_gfni; K.q6 = gemv_q6_avx512_gfni; K.q4_tokens = gemv_q4_tokens_avx512_gfni; K.q6_tokens = gemv_q6_tokens_avx512_gfni;
        }
    } else if (avx2) {
        K.variant = "avx2"; K.f32 = gemv_f32_avx2; K.f16 = gemv_f16_avx2; K.bf16 = gemv_bf16_avx2; K.q8 = gemv_q8_avx2; K.q4 = gemv_q4_avx2; K.q6 = gemv_q6_avx2;
        K.rows_f16 = rows_f16_avx2; K.quantize_x = quantize_x_avx2; K.qx_layouts = qx_layouts_avx2;
    } else {
        K.variant = "portable"; K.f32 = gemv_f32_portable; K.f16 = gemv_f16_portable; K.bf16 = gemv_bf16_portable; K.q8 = gemv_q8_portable;
        K.q4 = gemv_q4_portable; K.q6 = gemv_q6_portable; K.rows_f16 = rows_f16_portable; K.quantize_x = quantize_x_portable;
        K.qx_layouts = qx_layouts_portable;
    }
    K.chosen = 1;
}

void chk_force_portable(int on) { forced_portable = on; forced_avx2 = 0; K.chosen = 0; pick(); }
int chk_force_avx2(int on) {
    int has = cpu_has_avx2();
    forced_avx2 = on && has; forced_portable = 0; K.chosen = 0; pick();
    return !on || has;
}
int chk_force_no_gfni(int on) {
    __builtin_cpu_init();
    forced_no_gfni = on; K.chosen = 0; pick();
    return __builtin_cpu_supports("gfni") && K.avx512;
}
void chk_force_decode_rows(int rows) { forced_decode_rows = rows == 1 || rows == 4 ? rows : 0; K.chosen = 0; pick(); }
int chk_decode_rows_per_pass(void) { pick(); return decode_rows_per_pass; }
int chk_avx512_allowed(void) { return !forced_portable && !forced_avx2; }
int chk_avx2_allowed(void) { return !forced_portable && cpu_has_avx2(); }
const char *chk_kernel_variant(void) { pick(); return K.variant; }

const char *chk_cpu_features(void) {
    static char buffer[256];
    __builtin_cpu_init();
    buffer[0] = 0;
    const char *names[] = {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512bf16", "gfni"};
    for (unsigned i = 0; i < sizeof names / sizeof *names; i++) {
        int has = 0;
        switch (i) {
        case 0: has = __builtin_cpu_supports("avx2"); break;
        case 1: has = __builtin_cpu_supports("fma"); break;
        case 2: has = __builtin_cpu_supports("f16c"); break;
        case 3: has = __builtin_cpu_supports("avx512f"); break;
        case 4: has = __builtin_cpu_supports("avx512bw"); break;
        case 5: has = __builtin_cpu_supports("avx512vl"); break;
        case 6: has = __builtin_cpu_supports("avx512vnni"); break;
        case 7: has = __builtin_cpu_supports("avx512bf16"); break;
        case 8: has = __builtin_cpu_supports("gfni"); break;
        }
        if (has) { if (buffer[0]) strcat(buffer, " "); strcat(buffer, names[i]); }
    }
    return buffer;
}

void chk_to_f16(const float *x, long n, uint16_t *out) {
    pick();
    if (K.avx512) { to_f16_avx512(x, n, out); return; }
    for (long i = 0; i < n; i++) out[i] = float_to_half(x[i]);
}

void chk_gemv_f32(const float *w, const float *x, float *y, long cols, long row0, long row1) { pick(); K.f32(w, x, y, cols, row0, row1); }
void chk_gemv_f16(const uint16_t *w, const float *x, float *y, long cols, long row0, long row1) { pick(); K.f16(w, x, y, cols, row0, row1); }
void chk_gemv_bf16(const uint16_t *w, const float *x, float *y, long cols, long row0, long row1) { pick(); K.bf16(w, x, y, cols, row0, row1); }
void chk_gemv_q8_0(const int8_t *q, const uint16_t *s, const chk_qx *x, float *y, long cols, long r0, long r1) {
    pick(); K.q8(q, s, x, y, cols, r0, r1);
}
void chk_gemv_q4_0(const uint8_t *q, const uint16_t *s, const chk_qx *x, float *y, long cols, long r0, long r1) {
    pick(); K.q4(q, s, x, y, cols, r0, r1);
}
void chk_gemv_q6_0(const uint8_t *q, const uint16_t *s, const chk_qx *x, float *y, long cols, long r0, long r1) {
    pick(); K.q6(q, s, x, y, cols, r0, r1);
}
void chk_rows_f16(const uint16_t *w, long cols, long row0, long row1, float *out) { pick(); K.rows_f16(w, cols, row0, row1, out); }

// The loops below are simple enough for the compiler to vectorize at -O2 and above.
void chk_rows_bf16(const uint16_t *w, long cols, long row0, long row1, float *out) {
    const uint16_t *src = w + row0 * cols;
    for (long i = 0, n = (row1 - row0) * cols; i < n; i++) { uint32_t b = (uint32_t)src[i] << 16; memcpy(out + i, &b, 4); }
}

void chk_rows_q8_0(const int8_t *q, const uint16_t *scales, long cols, long row0, long row1, float *out) {
    long blocks = cols / CHK_BLOCK;
    for (long r = row0; r < row1; r++) {
        for (long b = 0; b < blocks; b++) {
            float d = half_to_float(scales[r * blocks + b]);
            const int8_t *src = q + r * cols + b * 32; float *dst = out + (r - row0) * cols + b * 32;
            for (int i = 0; i < 32; i++) dst[i] = (float)src[i] * d;
        }
    }
}

void chk_rows_q4_0(const uint8_t *q, const uint16_t *scales, long cols, long row0, long row1, float *out) {
    long blocks = cols / CHK_BLOCK;
    for (long r = row0; r < row1; r++) {
        for (long b = 0; b < blocks; b++) {
            float d = half_to_float(scales[r * blocks + b]);
            const uint8_t *src = q + (r * cols + b * 32) / 2; float *dst = out + (r - row0) * cols + b * 32;
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)((int)(src[j] & 15) - 8) * d;
                dst[j + 16] = (float)((int)(src[j] >> 4) - 8) * d;
            }
        }
    }
}

void chk_rows_q6_0(const uint8_t *q, const uint16_t *scales, long cols, long row0, long row1, float *out) {
    long blocks = cols / CHK_BLOCK;
    for (long r = row0; r < row1; r++) {
        const uint8_t *row = q + r * blocks * Q6_BLOCK_BYTES;
        for (long b = 0; b < blocks; b++) {
            float d = half_to_float(scales[r * blocks + b]), *dst = out + (r - row0) * cols + b * 32;
            for (int e = 0; e < 32; e++) dst[e] = (float)(q6_code(row, blocks, b, e) - 32) * d;
        }
    }
}

// MARK: - Quantization

// Buffer layout of a prepared activation: xq, x4, c8, c4 (n bytes each), then n/32 scales.
static inline long qx_part(long n) { return (n + 63) / 64 * 64; }
long chk_qx_bytes(long n) { return 4 * qx_part(n) + n / CHK_BLOCK * (long)sizeof(float) + 64; }

chk_qx chk_prepare_qx(const float *x, long n, void *buffer) {
    pick();
    int8_t *base = (int8_t *)(((uintptr_t)buffer + 63) & ~(uintptr_t)63), *xq = base, *x4 = base + qx_part(n);
    int32_t *c8 = (int32_t *)(base + 2 * qx_part(n)), *c4 = (int32_t *)(base + 3 * qx_part(n));
    float *xs = (float *)(base + 4 * qx_part(n));
    K.quantize_x(x, n, xq, xs);
    K.qx_layouts(xq, n, 0, x4, c8, c4);
    return (chk_qx){xq, x4, c8, c4, xs};
}

void chk_quantize_blocks(const float *x, long n, int8_t *q, float *scales) {
    pick();
    K.quantize_x(x, n, q, scales);
}

typedef struct { const float *x; long ldx, k; float *out; long ldo; } roundtrip_job;

static void roundtrip_task(void *context, long r0, long r1) {
    const roundtrip_job *j = context;
    enum { CHUNK = 1024 };  // blocks are independent: a row a chunk at a time, on the stack
    int8_t q[CHUNK]; float scales[CHUNK / CHK_BLOCK];
    for (long r = r0; r < r1; r++)
        for (long c = 0; c < j->k; c += CHUNK) {
            long n = j->k - c < CHUNK ? j->k - c : CHUNK;
            K.quantize_x(j->x + r * j->ldx + c, n, q, scales);
            for (long i = 0; i < n; i++) j->out[r * j->ldo + c + i] = (float)q[i] * scales[i / CHK_BLOCK];
        }
}

void chk_quantize_roundtrip(const float *x, long ldx, long m, long k, float *out, long ldo, int threads) {
    pick();
    roundtrip_job job = {x, ldx, k, out, ldo};
    chk_parallel_for(m, 16, threads, roundtrip_task, &job);
}

// Products of bfloat16 weights multiply the activation rounded to bfloat16 (nearest even), on every
// path, as llama.cpp's BF16 matrices and PyTorch's bf16 models do: so the GEMM can take AVX-512 BF16
// dot products where they run at twice the rate of float32 FMAs (AMD's Zen 4 and 5; gemm.c), and
// prefill, decode and every CPU still agree within float rounding.
static void bf16_round_row(const float *x, long n, float *out) {
    for (long i = 0; i < n; i++) out[i] = bf16_to_float(float_to_bf16(x[i]));
}

static void bf16_roundtrip_task(void *context, long r0, long r1) {
    const roundtrip_job *j = context;
    for (long r = r0; r < r1; r++) bf16_round_row(j->x + r * j->ldx, j->k, j->out + r * j->ldo);
}

void chk_bf16_roundtrip(const float *x, long ldx, long m, long k, float *out, long ldo, int threads) {
    roundtrip_job job = {x, ldx, k, out, ldo};
    chk_parallel_for(m, 16, threads, bf16_roundtrip_task, &job);
}

void chk_round_activation(chk_format format, const float *x, long ldx, long m, long k, float *out, long ldo, int threads) {
    if (chk_format_is_blocked(format)) chk_quantize_roundtrip(x, ldx, m, k, out, ldo, threads);
    else if (format == CHK_BF16) chk_bf16_roundtrip(x, ldx, m, k, out, ldo, threads);
    else
        for (long r = 0; r < m; r++) memmove(out + r * ldo, x + r * ldx, sizeof(float) * (size_t)k);
}

// v rounded to the nearest integer (ties to even, as lrintf) and clamped to [lo, hi] (Q8_0's ±127,
// Q4_0's −8 ... 7). Clamping first keeps the float → int conversion in range (NaN becomes lo, as
// lrintf's out-of-range result clamped did); adding and subtracting 1.5 × 2²³ rounds in the FPU's
// mode without a libm call, so the block loops vectorize (quantizing was mostly lrintf calls).
static inline int nearest_in(float v, float lo, float hi) {
    v = v > lo ? v : lo;  // false for NaN
    v = v < hi ? v : hi;
    return (int)((v + 12582912.0f) - 12582912.0f);
}

void chk_quantize_q8_0(const float *x, long rows, long cols, int8_t *q, uint16_t *scales) {
    long blocks = cols / CHK_BLOCK;
    for (long r = 0; r < rows; r++) {
        for (long b = 0; b < blocks; b++) {
            const float *src = x + r * cols + b * 32; float amax = 0;
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(src[i]));
            uint16_t h = float_to_half(amax / 127);
            float d = half_to_float(h), id = d > 0 ? 1 / d : 0;  // quantize against the stored (rounded) scale
            scales[r * blocks + b] = h;
            for (int i = 0; i < 32; i++) q[r * cols + b * 32 + i] = (int8_t)nearest_in(src[i] * id, -127, 127);
        }
    }
}

// Stores the float16 scale of a block of 32 whose codes run from -levels to levels - 1 and returns
// its inverse (0 for a zero scale), against which the values are rounded: the value of largest
// magnitude (the first of equals, NaNs ignored) maps to -levels exactly, so every level is used
// (ggml's Q4_0 choice), for q4_0 (8) and q6_0 (32).
static float store_extreme_scale(const float *src, float levels, uint16_t *scale) {
    float amax = 0, extreme = 0;
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(src[i]));
    for (int i = 0; i < 32 && amax > 0; i++) if (fabsf(src[i]) == amax) { extreme = src[i]; break; }
    *scale = float_to_half(extreme / -levels);
    float d = half_to_float(*scale);
    return d != 0 ? 1 / d : 0;
}

void chk_quantize_q4_0(const float *x, long rows, long cols, uint8_t *q, uint16_t *scales) {
    long blocks = cols / CHK_BLOCK;
    for (long r = 0; r < rows; r++) {
        for (long b = 0; b < blocks; b++) {
            const float *src = x + r * cols + b * 32;
            float id = store_extreme_scale(src, 8, scales + r * blocks + b);
            uint8_t *dst = q + (r * cols + b * 32) / 2;
            for (int j = 0; j < 16; j++)
                dst[j] = (uint8_t)((nearest_in(src[j] * id, -8, 7) + 8) | (nearest_in(src[j + 16] * id, -8, 7) + 8) << 4);
        }
    }
}

void chk_quantize_q6_0(const float *x, long rows, long cols, uint8_t *q, uint16_t *scales) {
    long blocks = cols / CHK_BLOCK;
    memset(q, 0, (size_t)(rows * blocks * Q6_BLOCK_BYTES));
    for (long r = 0; r < rows; r++) {
        for (long b = 0; b < blocks; b++) {
            const float *src = x + r * cols + b * 32;
            float id = store_extreme_scale(src, 32, scales + r * blocks + b);
            for (int e = 0; e < 32; e++) q6_store(q + r * blocks * Q6_BLOCK_BYTES, blocks, b, e, nearest_in(src[e] * id, -32, 31) + 32);
        }
    }
}

// MARK: - Decode attention

// One query row per head over its keys as rows (decode; chk_kv_view with keyPanels 0). Scores are
// scaled dot products, turned into probabilities by chk_softmax_rows (its SIMD exp: libm's expf
// per key was a third of a decoded token's time at 640 positions), then summed over the values.
// The body is compiled for AVX-512, AVX2 and the baseline, so that the dot products and sums
// vectorize on each.
#define ATTEND_ONE_BODY                                                                              \
    long group = heads / kvHeads;                                                                    \
    for (long h = head0; h < head1; h++) {                                                           \
        const float *qh = q + h * headDim; const long kvh = h / group;                               \
        const float *kh = kv->keys + kvh * kv->keyHeadStride, *vh = kv->values + kvh * kv->valueHeadStride; \
        for (long j = 0; j < keyCount; j++) {                                                        \
            const float *k = kh + j * kv->ldk; float d = 0;                                          \
            for (long i = 0; i < headDim; i++) d += qh[i] * k[i];                                    \
            scores[j] = d * scale;                                                                   \
        }                                                                                            \
        chk_softmax_rows(scores, 1, keyCount, keyCount);                                             \
        float *o = out + h * headDim;                                                                \
        for (long i = 0; i < headDim; i++) o[i] = 0;                                                 \
        for (long j = 0; j < keyCount; j++) {                                                        \
            const float *v = vh + j * kv->ldv; float p = scores[j];                                  \
            for (long i = 0; i < headDim; i++) o[i] += p * v[i];                                     \
        }                                                                                            \
    }

AVX512 static void attend_one_avx512(const float *q, const chk_kv_view *kv, long keyCount, long heads, long kvHeads,
                                     long headDim, float scale, float *scores, float *out, long head0, long head1) {
#pragma clang fp reassociate(on)  // lets the dot products vectorize
    ATTEND_ONE_BODY
}

AVX2 static void attend_one_avx2(const float *q, const chk_kv_view *kv, long keyCount, long heads, long kvHeads,
                                 long headDim, float scale, float *scores, float *out, long head0, long head1) {
#pragma clang fp reassociate(on)
    ATTEND_ONE_BODY
}

void chk_attend_one(const float *q, const chk_kv_view *kv, long keyCount, long heads, long kvHeads, long headDim,
                    float scale, float *scores, float *out, long head0, long head1) {
#pragma clang fp reassociate(on)
    pick();
    if (K.avx512) {
        attend_one_avx512(q, kv, keyCount, heads, kvHeads, headDim, scale, scores, out, head0, head1);
        return;
    }
    if (K.avx2) {
        attend_one_avx2(q, kv, keyCount, heads, kvHeads, headDim, scale, scores, out, head0, head1);
        return;
    }
    ATTEND_ONE_BODY
}

// Query rows [r0, r1) of KV head g's group over the cache's key panels (decode on the portable
// kernels; AVX2 has its own below): the rows share each panel and value row as it is read, three
// at a time, with their sums in locals of one panel's (or 32 dimensions') width, which the compiler keeps in vector registers
// (with fewer than three rows left, the missing ones repeat the first and are not stored). The
// full 32-dimension chunks of P·V have a loop of their own, whose constant trip count vectorizes
// without a remainder. scores holds (r1 − r0) rows of ldS ≥ keyCount rounded up to whole panels.
// A float16 cache (kv->half) is read in place: each panel line of keys and each value row is
// widened into a small local buffer just before use (KV_FLOATS: keys or values at base + at as
// floats, in place or widened into `buffer`).
#define KV_FLOATS(base, at, buffer, n)                                                               \
    (kv->half ? (rows_f16_portable((const uint16_t *)(base) + (at), n, 0, 1, buffer), (const float *)(buffer)) \
              : (const float *)(base) + (at))
static void attend_group_portable(const float *q, const chk_kv_view *kv, long keyCount, long heads, long kvHeads,
                                  long headDim, float scale, long g, long r0, long r1, float *scores, long ldS, float *out) {
    const long P = CHK_KEY_PANEL, group = heads / kvHeads, es = kv->half ? 2 : 4;
    const char *kh = (const char *)kv->keys + g * kv->keyHeadStride * es;
    const char *vh = (const char *)kv->values + g * kv->valueHeadStride * es;
    const float *qg = q + g * group * headDim;
    float wide[CHK_KEY_PANEL > 32 ? CHK_KEY_PANEL : 32];
    for (long j0 = 0; j0 < keyCount; j0 += P) {
        for (long r = r0; r < r1; r += 3) {
            long n = r1 - r < 3 ? r1 - r : 3;
            const float *q0 = qg + r * headDim, *q1 = n > 1 ? q0 + headDim : q0, *q2 = n > 2 ? q0 + 2 * headDim : q0;
            float a[3][CHK_KEY_PANEL] = {{0}};
            for (long i = 0; i < headDim; i++) {
                const float *k = KV_FLOATS(kh, j0 * headDim + i * P, wide, P);
                float x0 = q0[i], x1 = q1[i], x2 = q2[i];
                for (int t = 0; t < CHK_KEY_PANEL; t++) { a[0][t] += x0 * k[t]; a[1][t] += x1 * k[t]; a[2][t] += x2 * k[t]; }
            }
            for (long i = 0; i < n; i++)
                for (int t = 0; t < CHK_KEY_PANEL; t++) scores[(r - r0 + i) * ldS + j0 + t] = a[i][t] * scale;
        }
    }
    chk_softmax_rows(scores, r1 - r0, keyCount, ldS);
    for (long c = 0; c < headDim; c += 32) {
        long w = headDim - c < 32 ? headDim - c : 32;
        for (long r = r0; r < r1; r += 3) {
            long n = r1 - r < 3 ? r1 - r : 3;
            const float *p0 = scores + (r - r0) * ldS, *p1 = n > 1 ? p0 + ldS : p0, *p2 = n > 2 ? p0 + 2 * ldS : p0;
            float o[3][32] = {{0}};
            if (w == 32) {
                for (long j = 0; j < keyCount; j++) {
                    const float *v = KV_FLOATS(vh, j * kv->ldv + c, wide, 32);
                    float x0 = p0[j], x1 = p1[j], x2 = p2[j];
                    for (int t = 0; t < 32; t++) { o[0][t] += x0 * v[t]; o[1][t] += x1 * v[t]; o[2][t] += x2 * v[t]; }
                }
            } else {
                for (long j = 0; j < keyCount; j++) {
                    const float *v = KV_FLOATS(vh, j * kv->ldv + c, wide, w);
                    float x0 = p0[j], x1 = p1[j], x2 = p2[j];
                    for (long t = 0; t < w; t++) { o[0][t] += x0 * v[t]; o[1][t] += x1 * v[t]; o[2][t] += x2 * v[t]; }
                }
            }
            for (long i = 0; i < n; i++)
                for (long t = 0; t < w; t++) out[(g * group + r + i) * headDim + c + t] = o[i][t];
        }
    }
}
#undef KV_FLOATS

// The AVX2 version reads each key and value once for up to eight query rows, all of whose sums stay
// in registers: sixteen positions (scores) or sixteen dimensions (P·V) a pass, so a group of 7
// (Qwen2) or 8 (TinyLlama, in halves of four) is one pass over its KV head. The portable body above,
// compiled for AVX2 until now, took three rows a pass and spilled P·V's 12 accumulators to the stack: a
// Qwen2-0.5B layer at 672 positions 165 µs (81 from cache) on a Zen 3, 6 % of an f16 token and
// more of a q4_0 one.
#define ATTEND_ROWS_MAX 8

// Eight floats of a float32 or (half) float16 row at p.
AVX2 static inline __m256 kv8(const void *p, long at, const int half) {
    return half ? f16x8((const uint16_t *)p + at) : f32x8((const float *)p + at);
}

// Prefetches into L1 the `bytes` at p, a line at a time.
static inline void prefetch_lines(const void *p, long bytes) {
    for (long at = 0; at < bytes; at += 64) _mm_prefetch((const char *)p + at, _MM_HINT_T0);
}

// R rows of x (`ld` apart), elements [e0, e0 + n), each times `scale` and spread over a vector:
// spread[e·R + i] = eight lanes of x_i[e0 + e]. The loops below then read each as a plain vector
// load; a broadcast in the loop costs a shuffle beside every FMA, and on a Zen 3 the shuffles bound
// them (a step of 7 rows over 8 keys 7.1 cycles with broadcasts, 5.2 with spread queries).
AVX2 static inline __attribute__((always_inline)) void spread_rows(const int R, const float *x, long ld, long e0, long n,
                                                                    float scale, __m256 *spread) {
    for (long e = 0; e < n; e++)
        for (int i = 0; i < R; i++) spread[e * R + i] = _mm256_set1_ps(x[i * ld + e0 + e] * scale);
}

// out_i[0 ..< 16] (+)= Σ_t a_t,i · b_t[0 ..< 16] over t < n, for `rows` rows (at most seven: 2·rows
// accumulators and two vectors of b_t fill the 16 registers): a_t,i = a[t·R + i] (spread rows), b_t
// the 16 float32 or float16 elements at element b0 + t·ldb of b, out_i at out + i·ldo. Both halves
// of decode attention are this: the scores (a the spread queries, b_t a dimension of 16 keys in a
// key panel) and P·V (a the spread probabilities, b_t 16 dimensions of a value row). Each a loaded
// feeds two FMAs and each line of b is read whole in one pass. With `next`, its lines are prefetched
// one every 1 (float32) or 2 (float16) steps, counting steps from `step`, into L2 or L1.
AVX2 static inline __attribute__((always_inline)) void rows_by_two_vectors(const int rows, const int R, const int half,
                                                                            const int accumulate, const __m256 *a, const char *b,
                                                                            long b0, long ldb, long n, float *out, long ldo,
                                                                            const char *next, const int intoL2, long step) {
    const long period = half ? 2 : 1;
    __m256 acc[14];
    for (int i = 0; i < rows; i++) {
        acc[2 * i] = accumulate ? _mm256_loadu_ps(out + i * ldo) : _mm256_setzero_ps();
        acc[2 * i + 1] = accumulate ? _mm256_loadu_ps(out + i * ldo + 8) : _mm256_setzero_ps();
    }
    for (long t = 0; t < n; t++, a += R, step++) {
        if (next && step % period == 0) {
            if (intoL2) _mm_prefetch(next + step / period * 64, _MM_HINT_T2);
            else _mm_prefetch(next + step / period * 64, _MM_HINT_T0);
        }
        __m256 v0 = kv8(b, b0 + t * ldb, half), v1 = kv8(b, b0 + t * ldb + 8, half);
        for (int i = 0; i < rows; i++) {
            acc[2 * i] = _mm256_fmadd_ps(a[i], v0, acc[2 * i]);
            acc[2 * i + 1] = _mm256_fmadd_ps(a[i], v1, acc[2 * i + 1]);
        }
    }
    for (int i = 0; i < rows; i++) {
        _mm256_storeu_ps(out + i * ldo, acc[2 * i]);
        _mm256_storeu_ps(out + i * ldo + 8, acc[2 * i + 1]);
    }
}

// rows_by_two_vectors for the R rows of a group (R ≤ 8): up to seven in one pass, eight in two
// halves of four, the second reading b's stripe from L1 and prefetching nothing.
AVX2 static inline __attribute__((always_inline)) void group_by_two_vectors(const int R, const int half, const int accumulate,
                                                                             const __m256 *a, const char *b, long b0, long ldb, long n,
                                                                             float *out, long ldo, const char *next, const int intoL2,
                                                                             long step) {
    if (R <= 7) {
        rows_by_two_vectors(R, R, half, accumulate, a, b, b0, ldb, n, out, ldo, next, intoL2, step);
        return;
    }
    rows_by_two_vectors(4, R, half, accumulate, a, b, b0, ldb, n, out, ldo, next, intoL2, step);
    rows_by_two_vectors(R - 4, R, half, accumulate, a + 4, b, b0, ldb, n, out + 4 * ldo, ldo, NULL, intoL2, 0);
}

// scores[i][j0 + t] = q_i · key(j0 + t), t < CHK_KEY_PANEL, for R rows (a constant after
// inlining) of scaled queries spread by spread_rows over the key panel at `panel`, 16 keys a pass:
// each query vector loaded feeds two FMAs and each panel line is read whole in one pass (eight
// rows in two halves of four, the stripe from L1 the second time). The next panel, if `next`, is
// prefetched meanwhile into L2 (not L1, which holds the queries and this panel), its lines spread
// evenly over the panel's steps: from memory (caches flushed between layers), a Qwen2-0.5B layer
// at 672 positions 75–77 → 67–71 µs against the next panel into L1 during the first pass; then 16
// keys a pass instead of 8, B/A 0.885–0.94 (200 positions 0.953, 2000 0.970).
AVX2 static inline __attribute__((always_inline)) void panel_scores(const int R, const int half, const __m256 *qs, long headDim,
                                                                     const char *panel, const char *next, float *scores, long ldS, long j0) {
    // (the next panel's lines: one a step over the panel's CHK_KEY_PANEL / 16 passes of headDim steps)
    for (int c = 0; c < CHK_KEY_PANEL; c += 16)
        group_by_two_vectors(R, half, 0, qs, panel, c, CHK_KEY_PANEL, headDim, scores + j0 + c, ldS, next, 1, c / 16 * headDim);
}

// o_i[c ..< c + w] += Σ_j p_i[j] · value(j)[c ..< c + w] (w ≤ 8) over keys [j0, j1), R rows of
// probabilities spread by spread_rows (from j0) and of o headDim apart.
AVX2 static inline __attribute__((always_inline)) void values_sum(const int R, const int half, const __m256 *ps,
                                                                   const char *vh, long ldv, long j0, long j1, long c, int w,
                                                                   float *o, long headDim) {
    __m256 acc[ATTEND_ROWS_MAX];
    float lanes[8] = {0};
    for (int i = 0; i < R; i++) {
        if (w == 8) acc[i] = _mm256_loadu_ps(o + i * headDim + c);
        else { memcpy(lanes, o + i * headDim + c, sizeof(float) * (size_t)w); acc[i] = _mm256_loadu_ps(lanes); }
    }
    const __m256 *pj = ps;
    if (w == 8)  // (the loop apart from the other: with both in one, its counters spilled to the stack)
        for (long j = j0; j < j1; j++, pj += R) {
            __m256 v = kv8(vh, j * ldv + c, half);
            for (int i = 0; i < R; i++) acc[i] = _mm256_fmadd_ps(pj[i], v, acc[i]);
        }
    else  // a head width that is not a multiple of 8: its last few dimensions through a buffer
        for (long j = j0; j < j1; j++, pj += R) {
            if (half) rows_f16_avx2((const uint16_t *)vh + j * ldv + c, w, 0, 1, lanes);
            else memcpy(lanes, (const float *)vh + j * ldv + c, sizeof(float) * (size_t)w);
            __m256 v = _mm256_loadu_ps(lanes);
            for (int i = 0; i < R; i++) acc[i] = _mm256_fmadd_ps(pj[i], v, acc[i]);
        }
    for (int i = 0; i < R; i++) {
        if (w == 8) _mm256_storeu_ps(o + i * headDim + c, acc[i]);
        else { _mm256_storeu_ps(lanes, acc[i]); memcpy(o + i * headDim + c, lanes, sizeof(float) * (size_t)w); }
    }
}

// Vectors of scratch attend_rows_avx2 spreads its rows into (queries, then a block's probabilities).
static inline long attend_spread_vectors(long headDim) {
    return (headDim > CHK_KEY_PANEL ? headDim : CHK_KEY_PANEL) * ATTEND_ROWS_MAX;
}

// One pass of R query rows (from row r of KV head g's group): scores a key panel at a time, softmax,
// then P·V a block of CHK_KEY_PANEL value rows at a time (in L1 for all of a row's dimensions, the
// next block prefetched meanwhile), summed into o. So memory is read as two sequential streams.
// `spread` holds attend_spread_vectors(headDim) vectors.
AVX2 static inline __attribute__((always_inline)) void attend_rows_avx2(const int R, const int half, const float *qr,
                                                                         const chk_kv_view *kv, long keyCount, long headDim,
                                                                         float scale, long g, float *scores, long ldS,
                                                                         __m256 *spread, float *o) {
    const long es = half ? 2 : 4, panelBytes = headDim * CHK_KEY_PANEL * es, ldv = kv->ldv;
    const char *kh = (const char *)kv->keys + g * kv->keyHeadStride * es, *vh = (const char *)kv->values + g * kv->valueHeadStride * es;
    spread_rows(R, qr, headDim, 0, headDim, scale, spread);
    for (long j0 = 0; j0 < keyCount; j0 += CHK_KEY_PANEL) {
        const char *panel = kh + j0 * headDim * es;
        panel_scores(R, half, spread, headDim, panel, j0 + CHK_KEY_PANEL < keyCount ? panel + panelBytes : NULL, scores, ldS, j0);
    }
    chk_softmax_rows(scores, R, keyCount, ldS);
    for (int i = 0; i < R; i++) memset(o + i * headDim, 0, sizeof(float) * (size_t)headDim);
    for (long j0 = 0; j0 < keyCount; j0 += CHK_KEY_PANEL) {
        long j1 = j0 + CHK_KEY_PANEL < keyCount ? j0 + CHK_KEY_PANEL : keyCount;
        // the next block's rows, when it is a whole block, a few rows before each pass over this one
        const char *next = j1 + CHK_KEY_PANEL <= keyCount ? vh + j1 * ldv * es : NULL;
        spread_rows(R, scores, ldS, j0, j1 - j0, 1, spread);
        if (ldv == headDim && headDim % 16 == 0 && (headDim * es) % 64 == 0 && j1 - j0 == CHK_KEY_PANEL) {
            // Whole blocks of rows 16 dimensions a pass (eight rows in two halves of four, the stripe
            // from L1 the second time); the next block's (headDim·es/64)·CHK_KEY_PANEL lines spread
            // over the headDim/16 passes of CHK_KEY_PANEL steps. With a pass's lines in one burst
            // before it, 16 dimensions a pass measured 5–8 % slower from memory than 8; spread, a
            // Qwen2-0.5B layer at 672 positions B/A 0.91–0.95 (2000: 0.93, 200: level; float16 cache
            // 0.925), a TinyLlama layer 0.93–0.99 (kernel-ab).
            for (long c = 0; c < headDim; c += 16)
                group_by_two_vectors(R, half, 1, spread, vh, j0 * ldv + c, ldv, j1 - j0, o + c, headDim, next, 0, c / 16 * CHK_KEY_PANEL);
            continue;
        }
        const long passes = (headDim + 7) / 8, rowsAhead = (CHK_KEY_PANEL + passes - 1) / passes;
        for (long c = 0, ahead = 0; c < headDim; c += 8, ahead += rowsAhead) {
            for (long j = ahead; next && j < ahead + rowsAhead && j < CHK_KEY_PANEL; j++) prefetch_lines(next + j * ldv * es, headDim * es);
            values_sum(R, half, spread, vh, ldv, j0, j1, c, headDim - c < 8 ? (int)(headDim - c) : 8, o, headDim);
        }
    }
}

#define ATTEND_ROWS_CASE(R)                                                                                           \
    case R:                                                                                                           \
        if (kv->half) attend_rows_avx2(R, 1, qr, kv, keyCount, headDim, scale, g, scores, ldS, spread, o);           \
        else attend_rows_avx2(R, 0, qr, kv, keyCount, headDim, scale, g, scores, ldS, spread, o);                    \
        break;

AVX2 static void attend_group_avx2(const float *q, const chk_kv_view *kv, long keyCount, long heads, long kvHeads,
                                   long headDim, float scale, long g, long r0, long r1, float *scores, long ldS, __m256 *spread,
                                   float *out) {
    const long group = heads / kvHeads;
    for (long r = r0; r < r1; r += ATTEND_ROWS_MAX) {
        const float *qr = q + (g * group + r) * headDim;
        float *o = out + (g * group + r) * headDim;
        switch (r1 - r < ATTEND_ROWS_MAX ? r1 - r : ATTEND_ROWS_MAX) {
            ATTEND_ROWS_CASE(1) ATTEND_ROWS_CASE(2) ATTEND_ROWS_CASE(3) ATTEND_ROWS_CASE(4)
            ATTEND_ROWS_CASE(5) ATTEND_ROWS_CASE(6) ATTEND_ROWS_CASE(7) ATTEND_ROWS_CASE(8)
        }
    }
}

// MARK: - Thread pool

// Workers spin on a generation counter for a while after each job (decode issues one job per
// matrix, ~100 µs apart), then sleep on a condition variable. Chunks are claimed from an atomic
// counter, or from per-thread shares with stealing (chk_parallel_for_ranges), so a thread the OS
// delays (a shared machine) leaves its chunks to the others.
// Spinning is bounded in time (TSC cycles, ~40 µs): on a machine shared with other processes a
// spinning worker would otherwise take its core's time slices from the thread doing real work.
// The bound adapts: a worker whose sleep was short (the next job came within SPIN_MAX_CYCLES,
// ~0.7 ms) doubles its spin, up to that; a longer sleep (the process idle) brings it back down.
// Decode has gaps longer than the first spin (a sampled token's sampler, a thread the OS
// descheduled), and a job that finds the worker asleep waits 50–230 µs for it to wake: in
// Qwen2-0.5B q4_0 decode the worker slept 0.2–1.5 times a greedy token and 1.3–2.3 times a
// sampled one (temperature 0.8); adapting, almost never (17–54 sleeps in 300 tokens, load and
// prefill included). Decode tokens/s, alternating runs: greedy +0–7.7 % (3) and paired shares
// level (4, a heavy phase); sampled +3.7–6.6 % (2, temperature 0.8) and +2.6–10 % (3, top-p 0.9).
#define SPIN_CYCLES 100000ULL
#define SPIN_MAX_CYCLES (16 * SPIN_CYCLES)

static struct {
    pthread_mutex_t busy;  // held by the one caller running a job
    pthread_mutex_t lock;  // with `wake`: sleeping workers
    pthread_cond_t wake;
    int workers;  // threads besides the caller
    _Atomic unsigned long generation;
    _Atomic int sleepers, pending, quit, joined;
    _Atomic long next;
    long n, chunk; chk_task task; void *context;
    int ranges;  // each thread its own range of chunks, the rest stolen (see chk_parallel_for_ranges)
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
static pthread_t *pool_threads;
static _Thread_local int in_pool_task, pool_index;  // pool_index: 0 the caller, workers 1...

#define POOL_THREADS 64
// A thread's chunks [front, back) in one word (front in the high half): its owner claims from the
// front, a thread that has run out of its own steals from the back.
static struct { _Alignas(64) _Atomic uint64_t span; } pool_ranges[POOL_THREADS];

static inline uint64_t span_of(uint64_t front, uint64_t back) { return front << 32 | back; }

// Claims chunks of range t: its owner a quarter of what is left (at least one), a thief half.
static int claim_range(int t, int own, long *c0, long *c1) {
    uint64_t s = atomic_load_explicit(&pool_ranges[t].span, memory_order_relaxed);
    for (;;) {
        uint64_t front = s >> 32, back = (uint32_t)s, left = back > front ? back - front : 0;
        if (!left) return 0;
        uint64_t take = own ? (left / 4 ? left / 4 : 1) : (left + 1) / 2;
        uint64_t next = own ? span_of(front + take, back) : span_of(front, back - take);
        if (atomic_compare_exchange_weak_explicit(&pool_ranges[t].span, &s, next, memory_order_relaxed, memory_order_relaxed)) {
            *c0 = (long)(own ? front : back - take); *c1 = *c0 + (long)take;
            return 1;
        }
    }
}

static void run_chunks(long c0, long c1) {
    long end = c1 * pool.chunk < pool.n ? c1 * pool.chunk : pool.n;
    pool.task(pool.context, c0 * pool.chunk, end);
}

static void pool_work(void) {
    if (pool.ranges) {
        long c0, c1;
        while (claim_range(pool_index, 1, &c0, &c1)) run_chunks(c0, c1);
        for (;;) {  // then from the back of the range with the most left
            int victim = -1; uint64_t most = 0;
            for (int t = 0; t <= pool.workers; t++) {
                uint64_t s = atomic_load_explicit(&pool_ranges[t].span, memory_order_relaxed), f = s >> 32, b = (uint32_t)s;
                if (b > f && b - f > most) { most = b - f; victim = t; }
            }
            if (victim < 0) return;
            if (claim_range(victim, 0, &c0, &c1)) run_chunks(c0, c1);
        }
    }
    for (;;) {
        long begin = atomic_fetch_add(&pool.next, pool.chunk);
        if (begin >= pool.n) return;
        pool.task(pool.context, begin, begin + pool.chunk < pool.n ? begin + pool.chunk : pool.n);
    }
}

// What a waiting worker prefetches (pool.h): per worker, spans of bytes that the next job will
// have it read first. Relaxed atomics: a span read while the caller rewrites it can only make a
// worker prefetch the wrong lines, and prefetches do not fault.
static struct {
    _Alignas(64) _Atomic unsigned long posted;
    // Each worker's spans and their count on lines of their own: the caller writes only the lines of
    // the spans it posts (it wrote all 16, the first on the line of `posted`, which workers spin on).
    struct { _Alignas(64) _Atomic int count; struct { _Atomic(const char *) start; _Atomic long bytes; } spans[CHK_HINT_SPANS]; } workers[POOL_THREADS];
} hints;

// Read without the `busy` lock: a count changed meanwhile by another caller's job only sends the
// hints to workers that will not use them (they stay within POOL_THREADS).
int pool_hint_threads(int threads) {
    int workers = pool.workers;
    return threads - 1 < workers ? threads : workers + 1;
}

void pool_hint(int worker, const chk_byte_span *spans, int count) {
    count = count < CHK_HINT_SPANS ? count : CHK_HINT_SPANS;
    for (int i = 0; i < count; i++) {
        atomic_store_explicit(&hints.workers[worker].spans[i].start, spans[i].start, memory_order_relaxed);
        atomic_store_explicit(&hints.workers[worker].spans[i].bytes, spans[i].bytes, memory_order_relaxed);
    }
    atomic_store_explicit(&hints.workers[worker].count, count, memory_order_relaxed);
}

void pool_hint_post(void) { atomic_fetch_add_explicit(&hints.posted, 1, memory_order_release); }

// Prefetches into L2 the spans posted for worker `t`, until the generation moves on from `seen`
// (a job came: the prefetching stops within a kilobyte).
static void prefetch_hinted(int t, unsigned long seen) {
    int count = atomic_load_explicit(&hints.workers[t].count, memory_order_relaxed);
    for (int i = 0; i < count && i < CHK_HINT_SPANS; i++) {
        const char *p = atomic_load_explicit(&hints.workers[t].spans[i].start, memory_order_relaxed);
        long bytes = atomic_load_explicit(&hints.workers[t].spans[i].bytes, memory_order_relaxed);
        for (long b = 0; p && b < bytes; b += 64) {
            _mm_prefetch(p + b, _MM_HINT_T1);
            if ((b & 1023) == 1023 - 63 && atomic_load_explicit(&pool.generation, memory_order_relaxed) != seen) return;
        }
    }
}

// The cores this process may run on (its affinity mask), counted once.
static int pool_cores(void) {
    static _Atomic int cores;
    int n = atomic_load_explicit(&cores, memory_order_relaxed);
    if (!n) {
        cpu_set_t set;
        n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
        atomic_store_explicit(&cores, n > 0 ? n : 1, memory_order_relaxed);
    }
    return n > 0 ? n : 1;
}

// `start` is the generation when the worker was created: a job signalled before the thread first
// runs is then still seen as new.
static void *pool_worker(void *start) {
    in_pool_task = 1;
    pool_index = 1 + atomic_fetch_add(&pool.joined, 1);
    unsigned long seen = (unsigned long)(uintptr_t)start;
    unsigned long long spin = SPIN_CYCLES;  // adapts: see SPIN_MAX_CYCLES
    for (;;) {
        unsigned long g = seen, hinted = atomic_load_explicit(&hints.posted, memory_order_acquire);
        for (unsigned long long t0 = __rdtsc();
             (g = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen && __rdtsc() - t0 < spin;) {
            unsigned long h = atomic_load_explicit(&hints.posted, memory_order_acquire);
            if (h != hinted) { hinted = h; prefetch_hinted(pool_index, seen); continue; }
            _mm_pause();
        }
        if (g == seen) {
            unsigned long long asleep = __rdtsc();
            pthread_mutex_lock(&pool.lock);
            atomic_fetch_add(&pool.sleepers, 1);
            while ((g = atomic_load(&pool.generation)) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.lock);
            // (not when the threads outnumber the cores: a longer spin would hold a core whose
            // other thread has work)
            unsigned long long slept = __rdtsc() - asleep;
            int adapt = slept < SPIN_MAX_CYCLES && pool.workers + 1 <= pool_cores();
            spin = adapt ? (2 * spin < SPIN_MAX_CYCLES ? 2 * spin : SPIN_MAX_CYCLES) : SPIN_CYCLES;
        }
        seen = g;
        if (atomic_load(&pool.quit)) return NULL;
        pool_work();
        atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release);
    }
}

// Starts a new generation and wakes sleeping workers (a sleeper that registers after the
// sleepers check sees the new generation before waiting: both are sequentially consistent).
static void pool_signal(void) {
    atomic_fetch_add(&pool.generation, 1);
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
}

// Called with `busy` held: brings the pool to `count` workers.
static void pool_resize(int count) {
    if (count > POOL_THREADS - 1) count = POOL_THREADS - 1;  // compared after the cap, or every job would restart them
    if (count == pool.workers) return;
    if (pool.workers > 0) {
        atomic_store(&pool.quit, 1);
        pool_signal();
        for (int i = 0; i < pool.workers; i++) pthread_join(pool_threads[i], NULL);
        atomic_store(&pool.quit, 0);
        free(pool_threads); pool_threads = NULL; pool.workers = 0;
    }
    if (count <= 0) return;
    atomic_store(&pool.joined, 0);
    pool_threads = malloc(sizeof(pthread_t) * (size_t)count);
    for (int i = 0; i < count && pool_threads; i++) {
        void *start = (void *)(uintptr_t)atomic_load(&pool.generation);
        if (pthread_create(&pool_threads[i], NULL, pool_worker, start) != 0) break;
        pool.workers++;
    }
}

static void parallel_for(long n, long chunk, int ranges, int threads, chk_task task, void *context) {
    if (n <= 0) return;
    if (chunk < 1) chunk = 1;
    if (threads <= 1 || chunk >= n || in_pool_task || pthread_mutex_trylock(&pool.busy) != 0) {
        task(context, 0, n);
        return;
    }
    pool_resize(threads - 1);
    pool.n = n; pool.chunk = chunk; pool.ranges = ranges && (n + chunk - 1) / chunk < (1L << 32); pool.task = task; pool.context = context;
    atomic_store(&pool.next, 0);
    if (pool.ranges) {
        long chunks = (n + chunk - 1) / chunk, T = pool.workers + 1;
        for (long t = 0; t < T; t++)
            atomic_store_explicit(&pool_ranges[t].span, span_of((uint64_t)(t * chunks / T), (uint64_t)((t + 1) * chunks / T)), memory_order_relaxed);
    }
    atomic_store(&pool.pending, pool.workers);
    pool_signal();
    in_pool_task = 1;
    pool_work();
    in_pool_task = 0;
    // A worker still busy may share this core with us: yield rather than spin for long.
    for (unsigned long long t0 = __rdtsc(); atomic_load_explicit(&pool.pending, memory_order_acquire) > 0;) {
        if (__rdtsc() - t0 < SPIN_CYCLES / 4) _mm_pause(); else sched_yield();
    }
    pthread_mutex_unlock(&pool.busy);
}

void chk_parallel_for(long n, long chunk, int threads, chk_task task, void *context) {
    parallel_for(n, chunk, 0, threads, task, context);
}

void chk_parallel_for_ranges(long n, long chunk, int threads, chk_task task, void *context) {
    parallel_for(n, chunk, 1, threads, task, context);
}

// MARK: - Threaded matrix-vector product

// Scratch a kernel cannot do without (tens of kilobytes; scratch.h): out of memory here leaves
// nothing sensible to return, so it stops with a message rather than write through NULL.
static void *needed_scratch(int slot, long bytes) {
    float *p = chk_scratch(slot, (bytes + 3) / 4);
    if (!p) {
        fprintf(stderr, "chimera kernels: out of memory for %ld bytes of scratch\n", bytes);
        abort();
    }
    return p;
}

typedef struct {
    chk_format format; const void *w; const uint16_t *scales;
    const float *x; long ldx; const chk_qx *qx; long tokens;  // token t: x + t·ldx, or qx[t] for quantized weights
    float *y; long ldy; long cols;
} matvec_job;

// Rows [r0, r1) of one matrix for every token, token t's into y + t·ldy. On AVX-512 the kernels
// for several tokens take them (each group of rows loaded and unpacked once for four quantized
// tokens, or two float ones); AVX2 and portable kernels take one token after another.
static void matvec_task(void *context, long r0, long r1) {
    const matvec_job *j = context;
    if (j->tokens > 1) {
        switch (j->format) {
        case CHK_F32: if (K.f32_tokens) { K.f32_tokens(j->w, j->x, j->ldx, j->tokens, j->y, j->ldy, j->cols, r0, r1); return; } break;
        case CHK_F16: if (K.f16_tokens) { K.f16_tokens(j->w, j->x, j->ldx, j->tokens, j->y, j->ldy, j->cols, r0, r1); return; } break;
        case CHK_BF16: if (K.bf16_tokens) { K.bf16_tokens(j->w, j->x, j->ldx, j->tokens, j->y, j->ldy, j->cols, r0, r1); return; } break;
        case CHK_Q8_0: if (K.q8_tokens) { K.q8_tokens(j->w, j->scales, j->qx, j->tokens, j->y, j->ldy, j->cols, r0, r1); return; } break;
        case CHK_Q4_0: if (K.q4_tokens) { K.q4_tokens(j->w, j->scales, j->qx, j->tokens, j->y, j->ldy, j->cols, r0, r1); return; } break;
        case CHK_Q6_0: if (K.q6_tokens) { K.q6_tokens(j->w, j->scales, j->qx, j->tokens, j->y, j->ldy, j->cols, r0, r1); return; } break;
        }
    }
    for (long t = 0; t < j->tokens; t++) {
        const float *x = j->x + t * j->ldx; const chk_qx *qx = j->qx ? j->qx + t : NULL; float *y = j->y + t * j->ldy;
        switch (j->format) {
        case CHK_F32: K.f32(j->w, x, y, j->cols, r0, r1); break;
        case CHK_F16: K.f16(j->w, x, y, j->cols, r0, r1); break;
        case CHK_BF16: K.bf16(j->w, x, y, j->cols, r0, r1); break;
        case CHK_Q8_0: K.q8(j->w, j->scales, qx, y, j->cols, r0, r1); break;
        case CHK_Q4_0: K.q4(j->w, j->scales, qx, y, j->cols, r0, r1); break;
        case CHK_Q6_0: K.q6(j->w, j->scales, qx, y, j->cols, r0, r1); break;
        }
    }
}

// Several matrices of the same input (q/k/v, gate/up) as one product over their rows laid end to
// end: one dispatch and one activation quantization instead of one each, and the threads stream
// from one matrix straight into the next instead of meeting at a barrier after each.
//
// Several activation rows (a short prompt's tokens) take one pass over the weights: each piece of
// `block` rows is multiplied by every token before the next piece (matvec_task), so that the piece
// is read from memory once. Each token's results are exactly its single-row product's.
typedef struct {
    const chk_matvec_part *parts; int count; long firstRow[CHK_MATVEC_PARTS + 1];
    const float *x; long ldx, tokens, block; const chk_qx *qx; long cols;
    const float *xBF16;  // bfloat16 parts' activation: x rounded (rows `cols` apart)
} matvec_parts_job;

static void matvec_parts_task(void *context, long r0, long r1) {
    const matvec_parts_job *j = context;
    for (int i = 0; i < j->count && r0 < r1; i++) {
        long begin = j->firstRow[i], end = j->firstRow[i + 1];
        if (r0 >= end) continue;
        long a = r0 - begin, b = (r1 < end ? r1 : end) - begin;
        const chk_matvec_part *p = &j->parts[i];
        for (long s = a, e; s < b; s = e) {
            e = b - s < j->block ? b : s + j->block;
            int rounded = p->format == CHK_BF16;
            matvec_job one = {p->format, p->w, p->scales, rounded ? j->xBF16 : j->x, rounded ? j->cols : j->ldx, j->qx, j->tokens, p->y,
                              p->rows, j->cols};
            matvec_task(&one, s, e);
            // The bias on the thread that computed the rows, while they are in its L1 (a Qwen2
            // layer's q/k/v biases took the caller alone 1.5 µs afterwards).
            if (p->bias)
                for (long t = 0; t < j->tokens; t++)
                    for (long r = s; r < e; r++) p->y[t * p->rows + r] += p->bias[r];
        }
        r0 = begin + b;
    }
}

// Bytes of one stored row of `cols` weights (with its scales).
static long row_bytes(chk_format format, long cols) {
    switch (format) {
    case CHK_F32: return 4 * cols;
    case CHK_F16: case CHK_BF16: return 2 * cols;
    case CHK_Q8_0: return cols + cols / CHK_BLOCK * 2;
    case CHK_Q4_0: return cols / 2 + cols / CHK_BLOCK * 2;
    case CHK_Q6_0: return cols / CHK_BLOCK * (Q6_BLOCK_BYTES + 2);
    }
    return 4 * cols;
}

// Rows a claim takes at the least: about 16 KB of weights, in whole groups of four rows (the
// kernels' step), at most 16. A thread that has run out of rows waits for the other's last claim,
// so claims of 16 rows were long where rows are: TinyLlama's f16 down projection 180 KB (~18 µs
// at a thread's share of the bandwidth), Qwen2's q4_0 one 44 KB.
static long matvec_chunk_rows(const chk_matvec_part *parts, int count, long cols) {
    long widest = 0;
    for (int i = 0; i < count; i++) {
        long bytes = row_bytes(parts[i].format, cols);
        if (bytes > widest) widest = bytes;
    }
    long rows = (16L << 10) / (widest > 0 ? widest : 1) / 4 * 4;
    return rows < 4 ? 4 : rows > 16 ? 16 : rows;
}

void chk_matvec_rows(const chk_matvec_part *parts, int count, const float *x, long ldx, long tokens, long cols, int threads) {
    pick();
    if (count > CHK_MATVEC_PARTS) {  // more than one job holds: in turn (each with its bias)
        for (int i = 0; i < count; i++) chk_matvec_rows(&parts[i], 1, x, ldx, tokens, cols, threads);
        return;
    }
    if (tokens > CHK_MATVEC_TOKENS) {  // in groups that fit one job
        for (long t0 = 0; t0 < tokens; t0 += CHK_MATVEC_TOKENS) {
            chk_matvec_part shifted[CHK_MATVEC_PARTS];
            for (int i = 0; i < count; i++) { shifted[i] = parts[i]; shifted[i].y += t0 * parts[i].rows; }
            chk_matvec_rows(shifted, count, x + t0 * ldx, ldx, tokens - t0 < CHK_MATVEC_TOKENS ? tokens - t0 : CHK_MATVEC_TOKENS, cols, threads);
        }
        return;
    }
    if (tokens < 1) return;
    long chunk = matvec_chunk_rows(parts, count, cols);
    matvec_parts_job job = {parts, count, {0}, x, ldx, tokens, tokens > 1 ? chunk : LONG_MAX, NULL, cols};
    int quantized = 0, bf16 = 0;
    for (int i = 0; i < count; i++) {
        job.firstRow[i + 1] = job.firstRow[i] + parts[i].rows;
        quantized |= chk_format_is_blocked(parts[i].format);
        bf16 |= parts[i].format == CHK_BF16;
    }
    if (bf16) {  // in this thread's scratch for the duration of the product, as the quantized activation
        float *rounded = needed_scratch(CHK_SCRATCH_BF16_X, sizeof(float) * tokens * cols);
        for (long t = 0; t < tokens; t++) bf16_round_row(x + t * ldx, cols, rounded + t * cols);
        job.xBF16 = rounded;
    }
    // Each thread streams its own share of the rows, in claims down to one chunk, and then helps
    // with what is left of the others' (chk_parallel_for_ranges): with claims from one shared
    // counter, the threads' claims alternated, each starting a cold stream and moving the
    // counter's line between the cores — paired runs: Qwen2's 896 × 896 products +8–12 %, a whole
    // Qwen2 q8_0 token's products +6 %. The quantized activations are in this thread's scratch for
    // the duration of the product.
    chk_qx qx[CHK_MATVEC_TOKENS];
    if (quantized) {
        char *buffer = needed_scratch(CHK_SCRATCH_QX, tokens * chk_qx_bytes(cols));
        for (long t = 0; t < tokens; t++) qx[t] = chk_prepare_qx(x + t * ldx, cols, buffer + t * chk_qx_bytes(cols));
        job.qx = qx;
    }
    chk_parallel_for_ranges(job.firstRow[count], chunk, threads, matvec_parts_task, &job);
}

void chk_matvec_parts(const chk_matvec_part *parts, int count, const float *x, long cols, int threads) {
    chk_matvec_rows(parts, count, x, cols, 1, cols, threads);
}

void chk_matvec(chk_format format, const void *w, const uint16_t *scales, const float *x, float *y, long rows, long cols, int threads) {
    chk_matvec_part part = {format, w, scales, rows, y, NULL};
    chk_matvec_parts(&part, 1, x, cols, threads);
}

int chk_product_hint(const chk_matvec_part *parts, int count, long cols, int threads, int t, long most, chk_byte_span *spans) {
    if (count > CHK_MATVEC_PARTS || count < 1 || t < 1 || t >= threads) return 0;
    long rows = 0;
    for (int i = 0; i < count; i++) rows += parts[i].rows;
    // Worker t's own share of chk_matvec_parts's chunks starts at chunk t·chunks/threads (parallel_for).
    long chunk = matvec_chunk_rows(parts, count, cols), chunks = (rows + chunk - 1) / chunk;
    long r0 = t * chunks / threads * chunk, r1 = (t + 1) * chunks / threads * chunk, first = 0, budget = most;
    int n = 0;
    for (int i = 0; i < count && budget > 0; first += parts[i++].rows) {
        long a = r0 > first ? r0 - first : 0, b = r1 - first < parts[i].rows ? r1 - first : parts[i].rows;
        if (b <= a) continue;
        long rowBytes = row_bytes(parts[i].format, cols), scaleBytes = chk_format_is_blocked(parts[i].format) ? cols / CHK_BLOCK * 2 : 0;
        if ((b - a) * rowBytes > budget) b = a + (budget + rowBytes - 1) / rowBytes;
        budget -= (b - a) * rowBytes;
        spans[n++] = (chk_byte_span){(const char *)parts[i].w + a * (rowBytes - scaleBytes), (b - a) * (rowBytes - scaleBytes)};
        if (scaleBytes) spans[n++] = (chk_byte_span){(const char *)parts[i].scales + a * scaleBytes, (b - a) * scaleBytes};
    }
    return n;
}

void chk_prefetch_product(const chk_matvec_part *parts, int count, long cols, int threads, long most) {
    int T = pool_hint_threads(threads);
    for (int t = 1; t < T; t++) {
        chk_byte_span spans[CHK_HINT_SPANS];
        pool_hint(t, spans, chk_product_hint(parts, count, cols, T, t, most, spans));
    }
    if (T > 1) pool_hint_post();
}

// MARK: - Threaded argmax

// Greedy decoding's argmax over a large vocabulary, each thread over its own share (the head's
// product wrote about these shares of rows on these threads). Qwen2's 151,936 logits took 26–33 µs
// on one thread, 16–20 on two. The pool's worker, idle that long between tokens, mostly outlasted
// its spin and slept, and then took 35–50 µs to wake for the next token's first product (which the
// caller meanwhile ran alone): paired decode of Qwen2-0.5B q4_0 +0.5–0.9 % in 3 runs.
typedef struct { const float *x; long n, parts; float value[POOL_THREADS]; long index[POOL_THREADS]; } argmax_job;

static void argmax_task(void *context, long p0, long p1) {
    argmax_job *j = context;
    for (long p = p0; p < p1; p++) {
        long a = p * j->n / j->parts, b = (p + 1) * j->n / j->parts, i = a + chk_argmax(j->x + a, b - a);
        j->index[p] = i;
        j->value[p] = j->x[i];
    }
}

long chk_argmax_threaded(const float *x, long n, int threads) {
    enum { PER_THREAD = 32768 };  // below, a thread's hand-over costs more than it saves
    long parts = n / PER_THREAD < threads ? n / PER_THREAD : threads;
    if (parts > POOL_THREADS) parts = POOL_THREADS;
    if (parts < 2) return chk_argmax(x, n);
    argmax_job job = {x, n, parts};
    chk_parallel_for_ranges(parts, 1, (int)parts, argmax_task, &job);
    // The first part holding the largest value: its first index is the first overall. A part's
    // NaN (its first) comes before any number, as in chk_argmax.
    long best = 0;
    for (long p = 0; p < parts; p++) {
        if (job.value[p] != job.value[p]) return job.index[p];
        if (job.value[p] > job.value[best]) best = p;
    }
    return job.index[best];
}

// MARK: - Threaded decode attention

typedef struct {
    const float *q; chk_kv_view kv; long keyCount, heads, kvHeads, headDim; float scale; float *out;
} attend_job;

static void attend_task(void *context, long h0, long h1) {
    const attend_job *j = context;
    float *scores = needed_scratch(CHK_SCRATCH_SCORES, sizeof(float) * j->keyCount);  // one head's at a time
    chk_attend_one(j->q, &j->kv, j->keyCount, j->heads, j->kvHeads, j->headDim, j->scale, scores, j->out, h0, h1);
}

// Grouped-query heads over rows: the query heads of one KV head are rows of one small attention
// over the same keys (chk_attention with one head), so each cached key is read once per group, not
// once per query head, and the products run on the GEMM micro-kernel.
static void attend_group_task(void *context, long g0, long g1) {
    const attend_job *j = context;
    long group = j->heads / j->kvHeads, hd = j->headDim;
    for (long g = g0; g < g1; g++) {
        if (!chk_attention(j->q + g * group * hd, hd, j->kv.keys + g * hd, j->kv.values + g * hd, j->kv.ldk, group, j->keyCount,
                           1, 1, hd, j->scale, -1, j->out + g * group * hd, hd, 1))
            attend_task(context, g * group, (g + 1) * group);
    }
}

typedef struct {
    attend_job attend;
    long blocks, rowsPerBlock;  // each KV head's query rows in `blocks` blocks (work items)
} attend_panels_job;

static void attend_panels_task(void *context, long i0, long i1) {
    const attend_panels_job *pj = context;
    const attend_job *j = &pj->attend;
    long group = j->heads / j->kvHeads, ldS = (j->keyCount + CHK_KEY_PANEL - 1) / CHK_KEY_PANEL * CHK_KEY_PANEL;
    // (the AVX2 body's spread rows after the scores; ldS, a multiple of the panel, keeps them aligned)
    long scoreFloats = pj->rowsPerBlock * ldS, spreadFloats = K.avx2 ? 8 * attend_spread_vectors(j->headDim) : 0;
    float *scores = needed_scratch(CHK_SCRATCH_SCORES, sizeof(float) * (scoreFloats + spreadFloats));
    for (long item = i0; item < i1; item++) {
        long g = item / pj->blocks, r0 = item % pj->blocks * pj->rowsPerBlock;
        long r1 = r0 + pj->rowsPerBlock < group ? r0 + pj->rowsPerBlock : group;
        if (r0 >= r1) continue;
        if (K.avx2)
            attend_group_avx2(j->q, &j->kv, j->keyCount, j->heads, j->kvHeads, j->headDim, j->scale, g, r0, r1, scores, ldS,
                              (__m256 *)(scores + scoreFloats), j->out);
        else attend_group_portable(j->q, &j->kv, j->keyCount, j->heads, j->kvHeads, j->headDim, j->scale, g, r0, r1, scores, ldS, j->out);
    }
}

void chk_attend_view(const float *q, const chk_kv_view *kv, long keyCount, long heads, long kvHeads, long headDim,
                     float scale, float *out, int threads) {
    pick();
    attend_job job = {q, *kv, keyCount, heads, kvHeads, headDim, scale, out};
    if (kv->keyPanels) {
        // A KV head's query rows together (each key and value read once for them), in blocks.
        long group = heads / kvHeads, blocks, rows;
        if (K.avx2) {  // whole groups (a pass of up to eight rows), split only when KV heads are fewer than threads
            blocks = (threads + kvHeads - 1) / kvHeads;
            if (blocks > group) blocks = group;
            rows = (group + blocks - 1) / blocks;
        } else {  // the portable body's passes of three rows
            long maxBlocks = (group + 2) / 3;
            blocks = (2L * threads + kvHeads - 1) / kvHeads;
            if (blocks > maxBlocks) blocks = maxBlocks;
            rows = ((group + blocks - 1) / blocks + 2) / 3 * 3;
        }
        attend_panels_job pj = {job, (group + rows - 1) / rows, rows};
        chk_parallel_for(kvHeads * pj.blocks, 1, threads, attend_panels_task, &pj);
        return;
    }
    long chunk = (heads + 4L * threads - 1) / (4L * threads);
    chk_parallel_for(heads, chunk < 1 ? 1 : chunk, threads, attend_task, &job);
}

void chk_attend(const float *q, const float *keys, const float *values, long keyCount, long heads, long kvHeads,
                long headDim, float scale, float *out, int threads) {
    long kvWidth = kvHeads * headDim;
    chk_kv_view kv = {keys, kvWidth, headDim, 0, values, kvWidth, headDim};
    // Groups of four or more query heads fill enough of the micro-kernel's 12 rows to pay; there
    // must also be a group for every thread.
    if (heads / kvHeads >= 4 && kvHeads >= threads && chk_attention_available()) {
        attend_job job = {q, kv, keyCount, heads, kvHeads, headDim, scale, out};
        chk_parallel_for(kvHeads, 1, threads, attend_group_task, &job);
        return;
    }
    chk_attend_view(q, &kv, keyCount, heads, kvHeads, headDim, scale, out, threads);
}

// MARK: - Memory read bandwidth (what decode is bound by)

// The sum of n floats read four vectors at a time with plain loads, and prefetched FAR_BYTES
// ahead into L2 (within the n floats), as fast as the memory gives them.
AVX512 static float sum_streamed(const float *p, long n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    const long far = FAR_BYTES / 4;
    long i = 0;
    for (; i + 64 <= n; i += 64) {
        if (i + far + 64 <= n)
            for (int line = 0; line < 256; line += 64) _mm_prefetch((const char *)(p + i + far) + line, _MM_HINT_T1);
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p + i)); s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + i + 32)); s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + i + 48));
    }
    for (; i < n; i += 16) s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(first_lanes(n - i), p + i));
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

typedef struct { const float *p; long n; float sink[64]; } read_job;

AVX512 static void read_task_avx512(void *context, long c0, long c1) {  // chunks of 64 floats
    read_job *j = context;
    j->sink[c0 % 64] = sum_streamed(j->p + c0 * 64, (c1 - c0) * 64);
}

// On AVX2 plain loads without software prefetches: on a Zen 3 a prefetch 4–32 KiB ahead into L2
// made the read 3–12 % slower, and touching one float a line (the portable loop) read 1.5–8 %
// less (alternated passes over 512 MiB, 2 threads).
AVX2 static void read_task_avx2(void *context, long c0, long c1) {  // chunks of 64 floats
    read_job *j = context;
    __m256 s[8];
    for (int k = 0; k < 8; k++) s[k] = _mm256_setzero_ps();
    for (const float *p = j->p + c0 * 64, *end = j->p + c1 * 64; p < end; p += 64)
        for (int k = 0; k < 8; k++) s[k] = _mm256_add_ps(s[k], _mm256_loadu_ps(p + 8 * k));
    for (int k = 1; k < 8; k++) s[0] = _mm256_add_ps(s[0], s[k]);
    j->sink[c0 % 64] = hsum256(s[0]);
}

static void read_task_portable(void *context, long c0, long c1) {
    read_job *j = context;
    float s = 0;
    for (long i = c0 * 64; i < c1 * 64; i += 16) s += j->p[i];  // one float per 64-byte line
    j->sink[c0 % 64] = s;
}

double chk_read_pass(const float *p, long floats, int threads) {
    pick();
    long n = floats / 64 * 64;  // whole chunks of 64 floats
    if (n <= 0) return 0;
    read_job job = {p, n};
    chk_task task = K.avx512 ? read_task_avx512 : K.avx2 ? read_task_avx2 : read_task_portable;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    chk_parallel_for(n / 64, n / 64 / (8L * threads) + 1, threads, task, &job);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return seconds > 0 ? (double)n * 4 / seconds / 1e9 : 0;
}
