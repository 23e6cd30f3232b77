// Matrix products of a batch of activation rows with a weight matrix in any stored format:
// C[M, N] = X[M, K] · W[N, K]ᵀ (nn.Linear layout), for prefill and the vision encoders.
//
// Why our own GEMM: with weights in f16/bf16/q8_0/q4_0 the conversion to float32 happens while
// packing (no widened copy of the weights, no separate widening pass: prefill 10–30 % faster than
// widened tiles + sgemm), float32 is level with OpenBLAS's sgemm, and its micro-kernel also runs
// the whole-sequence attention at the end of this file. The layout is the usual one (Goto/BLIS):
//   - K is done a slice (≤ KC) at a time: each thread packs X's slice into panels of MR rows,
//     k-major: xp[panel][k][MR] (it stays in the core's L2 for the whole slice);
//   - the threads claim blocks of NB weight rows, convert and transpose the block's slice into
//     panels of NR rows, k-major: wp[panel][k][NR] (fits in L2), and run the MR × NR
//     micro-kernel over every X panel, which broadcasts X and loads W a vector at a time.
// AVX-512, or AVX2 (below, with smaller panels): without either chk_gemm_nt returns 0 and the
// caller falls back to sgemm. Quantized weights with AVX-512 VNNI take an int8 product instead (the
// same threading, its own packing and micro-kernel: "int8 products" below), and bf16 weights on AMD
// CPUs with AVX-512 BF16 a bfloat16 dot-product one ("bfloat16 products").
#include "chimera_kernels.h"
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdatomic.h>
#include <sched.h>
#include "elementwise.h"
#include "weights_avx512.h"
#include "weights_avx2.h"
#include "scratch.h"
#include "pool.h"
#include "q6_blocks.h"

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,avx2")))

// MR × NR: 24 accumulators of 16 floats plus two W vectors and a broadcast fit the 32 registers.
// KC × NB: a block of packed weights (256 KiB) and a KC slice of packed X stay in a core's 2 MiB L2.
enum { MR = 12, NR = 32, KC = 512, NB = 128 };

// MARK: - Thread-local scratch (scratch.h)

// Slots: 0 a slice of packed X, 1 packed weights (each thread), 2-6 attention's K panels, scores,
// packed probabilities, packed queries and V panels (each thread), 7 and 10 decode attention's
// partial results and scaled queries (the calling thread's, shared with the workers for one call).
static _Thread_local float *tls_buffer[CHK_SCRATCH_SLOTS];
static _Thread_local long tls_capacity[CHK_SCRATCH_SLOTS];

float *chk_scratch(int slot, long floats) {
    if (tls_capacity[slot] < floats) {
        if (floats < 2 * tls_capacity[slot]) floats = 2 * tls_capacity[slot];
        free(tls_buffer[slot]);
        tls_buffer[slot] = aligned_alloc(64, (size_t)((floats * 4 + 63) / 64 * 64));
        tls_capacity[slot] = tls_buffer[slot] ? floats : 0;
    }
    return tls_buffer[slot];
}

// MARK: - Prefetching the weights being packed

// Packing reads its rows (16 with AVX-512, 8 with AVX2) far apart, a line or less of each at a
// time: short streams that the hardware prefetchers barely follow, so its loads waited on memory
// (46 % of packing's samples, 8 % of a SigLIP encode's). f32/f16/bf16 rows are prefetched
// PACK_AHEAD bytes ahead of the reads (paired f32 GEMMs on ViT shapes +5–9 %, f16 and bf16 on
// TinyLlama's prefill +6–7 %); the quantized formats' unpacking is slow enough to hide the memory.
enum { PACK_AHEAD = 512 };

// Before packing columns from k (at most a line's worth) of the slice [k0, k0 + kc) of float-format
// rows [r0, r0 + rows): each row's line PACK_AHEAD bytes ahead (within the slice), and at k = 0
// the slice's first PACK_AHEAD bytes.
static inline __attribute__((always_inline)) void prefetch_packing(chk_format format, const void *w, long cols, long r0, long rows,
                                                                  long k0, long kc, long k) {
    long bytes = format == CHK_F32 ? 4 : 2, sliceBytes = kc * bytes, ahead = k * bytes + PACK_AHEAD;
    for (long i = 0; i < rows; i++) {
        const char *row = (const char *)w + ((r0 + i) * cols + k0) * bytes;
        if (k == 0)
            for (long b = 0; b < PACK_AHEAD && b < sliceBytes; b += 64) _mm_prefetch(row + b, _MM_HINT_T0);
        if (ahead < sliceBytes) _mm_prefetch(row + ahead, _MM_HINT_T0);
    }
}

// MARK: - Loading 16 weights of one row as float32

AVX512 static inline float half_to_float_scalar(uint16_t h) { return _cvtsh_ss(h); }

// The 32 weights of q4_0 or q8_0 block `block` of row r as two vectors of sixteen (elements 0-15,
// 16-31), the block's bytes and scale read once; q4_0's (code − 8)·d as code·d − 8d in one FMA
// (the same rounding: −8d is exact).
AVX512 static inline __attribute__((always_inline)) void quantized_block16x2(chk_format format, const void *w, const uint16_t *scales,
                                                                             long cols, long r, long block, __m512 out[2]) {
    __m512 d = _mm512_set1_ps(half_to_float_scalar(scales[r * (cols / CHK_BLOCK) + block]));
    if (format == CHK_Q4_0) {  // byte j holds elements j (low nibble) and j + 16 (high)
        __m128i bytes = _mm_loadu_si128((const __m128i *)((const uint8_t *)w + (r * cols + block * CHK_BLOCK) / 2)), low = _mm_set1_epi8(15);
        __m128i codes[2] = {_mm_and_si128(bytes, low), _mm_and_si128(_mm_srli_epi16(bytes, 4), low)};
        __m512 offset = _mm512_mul_ps(d, _mm512_set1_ps(-8));
        for (int i = 0; i < 2; i++) out[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes[i])), d, offset);
    } else {
        const int8_t *codes = (const int8_t *)w + r * cols + block * CHK_BLOCK;
        for (int i = 0; i < 2; i++)
            out[i] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(codes + 16 * i)))), d);
    }
}

// Sixteen consecutive weights W[r, k ..< k+count] (count ≤ 16; the rest zero).
AVX512 static inline __m512 load16(chk_format format, const void *w, const uint16_t *scales, long cols, long r, long k, int count) {
    __mmask16 mask = first_lanes(count);
    switch (format) {
    case CHK_F32: return f32x16_tail((const float *)w + r * cols + k, mask);
    case CHK_F16: return f16x16_tail((const uint16_t *)w + r * cols + k, mask);
    case CHK_BF16: return bf16x16_tail((const uint16_t *)w + r * cols + k, mask);
    case CHK_Q8_0: case CHK_Q4_0: {  // (the packing unpacks these a whole block at a time; k a multiple of 16)
        __m512 v[2];
        quantized_block16x2(format, w, scales, cols, r, k / CHK_BLOCK, v);
        return v[k % CHK_BLOCK / 16];
    }
    case CHK_Q6_0: {  // sixteen codes (k a multiple of 16)
        int32_t codes[16];
        float d = half_to_float_scalar(scales[q6_centred_codes(w, cols, r, k, 16, codes)]);
        return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(codes)), _mm512_set1_ps(d));
    }
    }
    return _mm512_setzero_ps();
}

// Transposes 16 rows × 16 columns held in v[0..15] and stores column c as dst[c * stride ..< +16]
// (only the first `stride` lanes when stride < 16), for the first `count` columns.
AVX512 static inline void transpose16_store(__m512 v[16], float *dst, long stride, int count) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        u[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 2])));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 2])));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * i + 1]), _mm512_castps_pd(t[4 * i + 3])));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * i + 1]), _mm512_castps_pd(t[4 * i + 3])));
    }
    // u[4i + j] holds, for rows 4i..4i+3, column j of each 128-bit lane (lanes = column groups of 4).
    for (int i = 0; i < 4; i++) {
        __m512 a = _mm512_shuffle_f32x4(u[i], u[4 + i], 0x88), b = _mm512_shuffle_f32x4(u[i], u[4 + i], 0xDD);
        __m512 c = _mm512_shuffle_f32x4(u[8 + i], u[12 + i], 0x88), d = _mm512_shuffle_f32x4(u[8 + i], u[12 + i], 0xDD);
        t[i] = _mm512_shuffle_f32x4(a, c, 0x88);       // column i
        t[i + 8] = _mm512_shuffle_f32x4(a, c, 0xDD);   // column i + 8
        t[i + 4] = _mm512_shuffle_f32x4(b, d, 0x88);   // column i + 4
        t[i + 12] = _mm512_shuffle_f32x4(b, d, 0xDD);  // column i + 12
    }
    if (stride >= 16) {
        for (int c = 0; c < count; c++) _mm512_storeu_ps(dst + c * stride, t[c]);
    } else {  // MR-wide rows of packed X: only the first `stride` lanes
        __mmask16 lanes = first_lanes(stride);
        for (int c = 0; c < count; c++) _mm512_mask_storeu_ps(dst + c * stride, lanes, t[c]);
    }
}

// Sixteen weight rows [r0, r0 + 16) (beyond `n` zero), columns [k0, k0 + kc), of a float format or
// q6_0 into 16 columns of a panel of NR, 16 × 16 at a time. Inlined with `format` a constant for the
// float formats (a jump per load cost f32 GEMMs 7 %), which are prefetched.
AVX512 static inline __attribute__((always_inline)) void pack_rows16(chk_format format, const void *w, const uint16_t *scales, long n,
                                                                    long cols, long r0, long k0, long kc, float *dst) {
    long rows = n - r0 < 16 ? n - r0 : 16;
    for (long k = 0; k < kc; k += 16) {
        int count = kc - k < 16 ? (int)(kc - k) : 16;
        if (format != CHK_Q6_0) prefetch_packing(format, w, cols, r0, rows, k0, kc, k);
        __m512 v[16];
        for (int i = 0; i < 16; i++) v[i] = i < rows ? load16(format, w, scales, cols, r0 + i, k0 + k, count) : _mm512_setzero_ps();
        transpose16_store(v, dst + k * NR, NR, count);
    }
}

// Weight rows [n0, n0 + rows) (rows ≤ NB; beyond `n` zero), columns [k0, k0 + kc), into
// panels wp[panel][k][NR]: 16 rows × 16 columns loaded, transposed and stored as 16 half-rows of a
// panel at a time (q4_0 and q8_0: 16 rows × a block of 32, each row's block unpacked at once).
AVX512 static void pack_weights(chk_format format, const void *w, const uint16_t *scales, long n, long cols,
                                long n0, long rows, long k0, long kc, void *out) {
    float *wp = out;
    for (long p = 0; p < (rows + NR - 1) / NR; p++) {
        float *panel = wp + p * kc * NR;
        for (int half = 0; half < NR / 16; half++) {
            long r0 = n0 + p * NR + half * 16;
            if (format == CHK_Q4_0 || format == CHK_Q8_0) {  // k0 and kc are whole blocks (chk_gemm_nt_parts checks)
                for (long k = 0; k < kc; k += CHK_BLOCK) {
                    __m512 tiles[2][16];  // [columns / 16][row]
                    for (int i = 0; i < 16; i++) {
                        __m512 v[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
                        if (r0 + i < n) quantized_block16x2(format, w, scales, cols, r0 + i, (k0 + k) / CHK_BLOCK, v);
                        tiles[0][i] = v[0]; tiles[1][i] = v[1];
                    }
                    for (int q = 0; q < 2; q++) transpose16_store(tiles[q], panel + (k + 16 * q) * NR + half * 16, NR, 16);
                }
                continue;
            }
            float *dst = panel + half * 16;
            switch (format) {
            case CHK_F32: pack_rows16(CHK_F32, w, scales, n, cols, r0, k0, kc, dst); break;
            case CHK_F16: pack_rows16(CHK_F16, w, scales, n, cols, r0, k0, kc, dst); break;
            case CHK_BF16: pack_rows16(CHK_BF16, w, scales, n, cols, r0, k0, kc, dst); break;
            default: pack_rows16(format, w, scales, n, cols, r0, k0, kc, dst); break;  // q6_0 (kc a multiple of 32)
            }
        }
    }
}

// X rows [r0, r0 + MR) (beyond m zero), columns [0, k), into dst[k][MR]: a 16 × 16 transpose at a time.
AVX512 static void pack_x_rows(const float *x, long ldx, long m, long k, long r0, void *out) {
    float *dst = out;
    for (long c = 0; c < k; c += 16) {
        int count = k - c < 16 ? (int)(k - c) : 16;
        __mmask16 mask = first_lanes(count);
        __m512 v[16];
        for (int i = 0; i < 16; i++)
            v[i] = i < MR && r0 + i < m ? _mm512_maskz_loadu_ps(mask, x + (r0 + i) * ldx + c) : _mm512_setzero_ps();
        transpose16_store(v, dst + c * MR, MR, count);
    }
}

// MARK: - Micro-kernel: C[MR, NR] (+)= xp[kc][MR] · W[kc][NR]

// The k loop over NV (1 or 2) vectors of W per row, loaded whole or under masks (a masked load
// takes a slot on the ports the FMAs use, about 15 % here, so full panels take plain loads). The
// first step multiplies, the others multiply-add: zeroing the accumulators first was compiled as a
// call to memset for every micro-kernel call (1 % of a CLIP encode's samples; paired GEMM runs
// on ViT shapes +1–1.6 % median, within their noise). Each step prefetches W's row 8 steps ahead
// into L1 and, when `farLines` > 0, that many lines FAR_BYTES ahead into L2: decode attention
// streams the cache's keys and values from memory through the kernel this way (below). There the
// near prefetch takes every line of the row (a key panel's row is two): with only its first, the
// other line came from L2 on demand as each step needed it — paired in kernel-ab, decode attention
// from memory +6–9 % (Qwen2-0.5B and TinyLlama layers at 672 and 940 positions), from cache +2.5 %.
#define KERNEL_STEP(R, NV, LOAD0, LOAD1, OP, FAR)                         \
    do {                                                                  \
        __m512 b0 = LOAD0, b1 = NV > 1 ? LOAD1 : b0;                      \
        _mm_prefetch((const char *)(wp + 8 * ldw), _MM_HINT_T0);          \
        if ((FAR) > 0 && NV > 1 && !HALF) _mm_prefetch((const char *)(wp + 8 * ldw + 16), _MM_HINT_T0); \
        for (int f = 0; f < (FAR); f++)                                   \
            _mm_prefetch((const char *)wp + FAR_BYTES + 64 * f, _MM_HINT_T1); \
        for (int i = 0; i < R; i++) {                                     \
            __m512 a = _mm512_set1_ps(ROWWISE ? xp[i * ldx] : xp[i]);     \
            acc[i][0] = OP(a, b0, acc[i][0]);                             \
            if (NV > 1) acc[i][1] = OP(a, b1, acc[i][1]);                 \
        }                                                                 \
        xp += ROWWISE ? 1 : MR; wp += ldw;                                \
    } while (0)
#define FIRST_PRODUCT(a, b, c) _mm512_mul_ps(a, b)
#define KERNEL_LOOP_FAR(R, NV, LOAD0, LOAD1, FAR)                         \
    KERNEL_STEP(R, NV, LOAD0, LOAD1, FIRST_PRODUCT, FAR);                 \
    for (long k = 1; k < kc; k++) KERNEL_STEP(R, NV, LOAD0, LOAD1, _mm512_fmadd_ps, FAR);
// The far prefetch's line count as a constant where it is common (none for the GEMM, a key panel
// row's 2 — 1 in float16 — and a 64-wide value row's 4 in decode attention), so those loops carry
// no count loop.
#define KERNEL_LOOP(R, NV, LOAD0, LOAD1)                                  \
    switch (farLines) {                                                   \
    case 0: KERNEL_LOOP_FAR(R, NV, LOAD0, LOAD1, 0) break;                \
    case 1: KERNEL_LOOP_FAR(R, NV, LOAD0, LOAD1, 1) break;                \
    case 2: KERNEL_LOOP_FAR(R, NV, LOAD0, LOAD1, 2) break;                \
    case 4: KERNEL_LOOP_FAR(R, NV, LOAD0, LOAD1, 4) break;                \
    default: KERNEL_LOOP_FAR(R, NV, LOAD0, LOAD1, farLines) break;        \
    }

// C[R, 16·NV] (+)= xp[kc][MR] · W[kc][16·NV] (+ bias[16·NV] on every row when bias is not NULL),
// for the first R ≤ MR rows of each packed X row. W's k-th row starts at wp + k·ldw (NR for packed
// weights and key panels). Only the first `rows` (≤ R) × `cols` of C are touched, and W and bias
// are read only in their first `cols` columns.
AVX512 static inline __attribute__((always_inline)) void kernel_body(long kc, const float *xp, const float *wp, long ldw,
    const float *bias, float *c, long ldc, int accumulate, long rows, long cols, int farLines, const int R, const int NV,
    const int ROWWISE, long ldx, const int HALF) {
    __mmask16 m0 = first_lanes(cols), m1 = first_lanes(cols - 16);
    __m512 acc[MR][2];  // set by the first step
    // C's tile is read (accumulate) and written only after the k loop; in a large product it is
    // in memory by then (each K slice is a pass over all of C), and a dozen cache misses at the
    // end of every call stall it: prefetched now, it arrives during the loop (ET0 compiles to
    // prefetcht0 here: the target attribute has no prfchw; paired
    // f32 GEMMs, SigLIP's shapes: 729 × 4304 × 1152 +6 % on two threads, +9 % on one;
    // 729 × 1152 × 1152 +5 %; others unchanged).
    for (int i = 0; i < R && i < rows; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_ET0);
        if (NV > 1) _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_ET0);
    }
    if (kc < 1) {  // an empty product: C = bias (or C unchanged with accumulate)
        for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    } else if (HALF && cols >= 16 * NV) {
        KERNEL_LOOP(R, NV, f16x16((const uint16_t *)wp), f16x16((const uint16_t *)wp + 16))
    } else if (HALF) {
        KERNEL_LOOP(R, NV, f16x16_tail((const uint16_t *)wp, m0), f16x16_tail((const uint16_t *)wp + 16, m1))
    } else if (cols >= 16 * NV) {
        KERNEL_LOOP(R, NV, _mm512_loadu_ps(wp), _mm512_loadu_ps(wp + 16))
    } else {
        KERNEL_LOOP(R, NV, _mm512_maskz_loadu_ps(m0, wp), _mm512_maskz_loadu_ps(m1, wp + 16))
    }
    __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 bias1 = bias && NV > 1 ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    for (int i = 0; i < R && i < rows; i++) {
        float *row = c + i * ldc;
        if (bias) acc[i][0] = _mm512_add_ps(acc[i][0], bias0);
        if (accumulate) acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(m0, row));
        _mm512_mask_storeu_ps(row, m0, acc[i][0]);
        if (NV > 1) {
            if (bias) acc[i][1] = _mm512_add_ps(acc[i][1], bias1);
            if (accumulate) acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(m1, row + 16));
            _mm512_mask_storeu_ps(row + 16, m1, acc[i][1]);
        }
    }
}

typedef void (*kernel_fn)(long kc, const float *xp, const float *wp, long ldw, const float *bias, float *c, long ldc,
                          int accumulate, long rows, long cols, int farLines);
#define KERNEL(R, COLS, NV)                                                                                      \
    AVX512 static void kernel_##R##x##COLS(long kc, const float *xp, const float *wp, long ldw, const float *bias, \
                                         float *c, long ldc, int accumulate, long rows, long cols, int farLines) { \
        kernel_body(kc, xp, wp, ldw, bias, c, ldc, accumulate, rows, cols, farLines, R, NV, 0, 0, 0);            \
    }
KERNEL(12, 32, 2) KERNEL(12, 16, 1) KERNEL(8, 32, 2) KERNEL(8, 16, 1) KERNEL(7, 32, 2) KERNEL(7, 16, 1) KERNEL(4, 32, 2) KERNEL(4, 16, 1)
KERNEL(1, 32, 2) KERNEL(1, 16, 1)

// The same with X read in place, by rows `ldx` apart (x[i][k] = x[i·ldx + k]), for decode
// attention's queries and probabilities: packing them into panels took a transpose per 16. The
// rows past `rows` up to the kernel's R are read too (their results are not stored), so they must
// be readable, and finite (the caller zeroes them).
typedef void (*rows_kernel_fn)(long kc, const float *x, long ldx, const float *wp, long ldw, float *c, long ldc, long rows, long cols,
                               int farLines);
// W may also hold float16 (HALF: a float16 KV cache's key panels and value rows, read in place and
// widened as loaded; `wp` then points at the halves and `ldw` counts floats, half the halves).
#define ROWS_KERNEL(R, COLS, NV, HALF, NAME)                                                                            \
    AVX512 static void NAME##_##R##x##COLS(long kc, const float *x, long ldx, const float *wp, long ldw, float *c,      \
                                          long ldc, long rows, long cols, int farLines) {                             \
        kernel_body(kc, x, wp, ldw, NULL, c, ldc, 0, rows, cols, farLines, R, NV, 1, ldx, HALF);                      \
    }
#define ROWS_KERNELS(HALF, NAME)                                                                                        \
    ROWS_KERNEL(12, 32, 2, HALF, NAME) ROWS_KERNEL(12, 16, 1, HALF, NAME) ROWS_KERNEL(8, 32, 2, HALF, NAME)             \
    ROWS_KERNEL(8, 16, 1, HALF, NAME) ROWS_KERNEL(7, 32, 2, HALF, NAME) ROWS_KERNEL(7, 16, 1, HALF, NAME)              \
    ROWS_KERNEL(4, 32, 2, HALF, NAME) ROWS_KERNEL(4, 16, 1, HALF, NAME) ROWS_KERNEL(1, 32, 2, HALF, NAME)              \
    ROWS_KERNEL(1, 16, 1, HALF, NAME)
ROWS_KERNELS(0, rows_kernel) ROWS_KERNELS(1, half_rows_kernel)

// Decode attention's P · V over 64 value columns at once, the probabilities read by rows: each
// value row is used whole in one step (4 vectors, 4·R accumulators; with 7 or 8 rows a few of them
// live on the stack), prefetched ahead into L2 when `far` (a float32 cache read from memory). With
// two 32-column passes, the second read every row again from cache while memory idled (paired: a
// Qwen2 layer from memory +5–10 % at 840 positions and +9 % at 2000, level from cache; TinyLlama's
// +6–9 %).
AVX512 static inline __attribute__((always_inline)) void wide_rows_body(long kc, const float *x, long ldx, const float *wp, long ldw,
                                                                       float *c, long ldc, long rows, int far, const int R,
                                                                       const int HALF) {
    __m512 acc[8][4];
    const int lines = HALF ? 2 : 4;  // a row of 64 values
    for (int i = 0; i < R; i++)
        for (int v = 0; v < 4; v++) acc[i][v] = _mm512_setzero_ps();
    for (long k = 0; k < kc; k++, x++, wp += ldw) {
        const uint16_t *h = (const uint16_t *)wp;
        __m512 b0 = HALF ? f16x16(h) : _mm512_loadu_ps(wp), b1 = HALF ? f16x16(h + 16) : _mm512_loadu_ps(wp + 16);
        __m512 b2 = HALF ? f16x16(h + 32) : _mm512_loadu_ps(wp + 32), b3 = HALF ? f16x16(h + 48) : _mm512_loadu_ps(wp + 48);
        _mm_prefetch((const char *)(wp + 8 * ldw), _MM_HINT_T0);
        if (far) {  // the row's other lines near too, as kernel_body's (see there)
            for (int l = 1; l < lines; l++) _mm_prefetch((const char *)(wp + 8 * ldw) + 64 * l, _MM_HINT_T0);
            for (int f = 0; f < lines; f++) _mm_prefetch((const char *)wp + FAR_BYTES + 64 * f, _MM_HINT_T1);
        }
        for (int i = 0; i < R; i++) {
            __m512 a = _mm512_set1_ps(x[i * ldx]);
            acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]); acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(a, b2, acc[i][2]); acc[i][3] = _mm512_fmadd_ps(a, b3, acc[i][3]);
        }
    }
    for (int i = 0; i < R && i < rows; i++)
        for (int v = 0; v < 4; v++) _mm512_storeu_ps(c + i * ldc + 16 * v, acc[i][v]);
}
typedef void (*wide_rows_kernel_fn)(long kc, const float *x, long ldx, const float *wp, long ldw, float *c, long ldc, long rows, int far);
#define WIDE_ROWS_KERNEL(R, HALF, NAME)                                                                                  \
    AVX512 static void NAME##_##R(long kc, const float *x, long ldx, const float *wp, long ldw, float *c, long ldc,       \
                                  long rows, int far) {                                                                  \
        wide_rows_body(kc, x, ldx, wp, ldw, c, ldc, rows, far, R, HALF);                                                 \
    }
WIDE_ROWS_KERNEL(1, 0, wide_rows_kernel) WIDE_ROWS_KERNEL(4, 0, wide_rows_kernel) WIDE_ROWS_KERNEL(7, 0, wide_rows_kernel)
WIDE_ROWS_KERNEL(8, 0, wide_rows_kernel) WIDE_ROWS_KERNEL(1, 1, half_wide_rows_kernel) WIDE_ROWS_KERNEL(4, 1, half_wide_rows_kernel)
WIDE_ROWS_KERNEL(7, 1, half_wide_rows_kernel) WIDE_ROWS_KERNEL(8, 1, half_wide_rows_kernel)

// The kernel for a block of `rows` X rows and `cols` columns of C: attention's blocks are often
// short (a decoded token's 7 or 8 query heads of a group, one head without grouping) and the last
// value panel of heads 72 or 80 wide is ≤ 16 columns: fewer rows and vectors, less work. Seven
// rows (Qwen2-0.5B's groups) have their own kernel rather than eight with one wasted: a decoded
// Qwen2 layer's attention +5 % (paired, 840 positions). The kernels' heights (R), in the tables'
// order; the rows of the kernel chosen for `rows` are kernel_height(rows).
static const long kernel_heights[] = {1, 4, 7, 8, MR};
static int height_index(long rows) { return rows <= 1 ? 0 : rows <= 4 ? 1 : rows == 7 ? 2 : rows <= 8 ? 3 : 4; }
static long kernel_height(long rows) { return kernel_heights[height_index(rows)]; }
static const kernel_fn packed_kernels[][2] = {  // [height][narrow]
    {kernel_1x32, kernel_1x16}, {kernel_4x32, kernel_4x16}, {kernel_7x32, kernel_7x16}, {kernel_8x32, kernel_8x16},
    {kernel_12x32, kernel_12x16}};
static const rows_kernel_fn by_rows_kernels[2][5][2] = {  // [half][height][narrow]
    {{rows_kernel_1x32, rows_kernel_1x16}, {rows_kernel_4x32, rows_kernel_4x16}, {rows_kernel_7x32, rows_kernel_7x16},
     {rows_kernel_8x32, rows_kernel_8x16}, {rows_kernel_12x32, rows_kernel_12x16}},
    {{half_rows_kernel_1x32, half_rows_kernel_1x16}, {half_rows_kernel_4x32, half_rows_kernel_4x16},
     {half_rows_kernel_7x32, half_rows_kernel_7x16}, {half_rows_kernel_8x32, half_rows_kernel_8x16},
     {half_rows_kernel_12x32, half_rows_kernel_12x16}}};
static kernel_fn small_kernel(long rows, long cols) { return packed_kernels[height_index(rows)][cols <= 16]; }
static rows_kernel_fn small_rows_kernel(long rows, long cols, int half) { return by_rows_kernels[half != 0][height_index(rows)][cols <= 16]; }
// The 64-column one for `rows`, or NULL (more than 8 rows).
static wide_rows_kernel_fn wide_rows_kernel(long rows, int half) {
    static const wide_rows_kernel_fn kernels[2][5] = {
        {wide_rows_kernel_1, wide_rows_kernel_4, wide_rows_kernel_7, wide_rows_kernel_8, NULL},
        {half_wide_rows_kernel_1, half_wide_rows_kernel_4, half_wide_rows_kernel_7, half_wide_rows_kernel_8, NULL}};
    return kernels[half != 0][height_index(rows)];
}

// MARK: - AVX2 (+FMA, F16C): the same product with a 6 × 16 micro-kernel

// Where AVX-512 is missing (AMD Zen 2/3, older Intel), the product runs as above with the sizes of
// 16 vector registers of 8 floats: 6 × 16 (12 accumulators, two W vectors and a broadcast). Its
// packing converts the stored format as the AVX-512 one does, so f16/bf16/q8_0/q4_0 weights need no
// widened copy and no second pass (the fallback widened 4 MiB tiles and ran sgemm on each).
enum { MR2 = 6, NR2 = 16 };

// The 32 weights of q4_0 block `block` of row r as four vectors of eight: the block's 16 bytes
// read once (byte j holds elements j and j + 16), (code − 8)·d as code·d − 8d in one FMA (the
// same rounding: −8d is exact).
AVX2 static inline __attribute__((always_inline)) void q4_block8x4(const uint8_t *w, const uint16_t *scales, long cols, long r,
                                                                  long block, __m256 out[4]) {
    __m128i bytes = _mm_loadu_si128((const __m128i *)(w + (r * cols + block * CHK_BLOCK) / 2)), low = _mm_set1_epi8(15);
    __m128i lo = _mm_and_si128(bytes, low), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low);
    __m256 d = _mm256_set1_ps(_cvtsh_ss(scales[r * (cols / CHK_BLOCK) + block])), offset = _mm256_mul_ps(d, _mm256_set1_ps(-8));
    __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int i = 0; i < 4; i++) out[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[i])), d, offset);
}

// The 32 weights of q8_0 block `block` of row r as four vectors of eight (its scale converted once).
AVX2 static inline __attribute__((always_inline)) void q8_block8x4(const int8_t *w, const uint16_t *scales, long cols, long r,
                                                                  long block, __m256 out[4]) {
    const int8_t *codes = w + r * cols + block * CHK_BLOCK;
    __m256 d = _mm256_set1_ps(_cvtsh_ss(scales[r * (cols / CHK_BLOCK) + block]));
    for (int i = 0; i < 4; i++)
        out[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(codes + 8 * i)))), d);
}

// The 32 weights of q4_0 or q8_0 block `block` of row r as four vectors of eight.
AVX2 static inline __attribute__((always_inline)) void quantized_block8x4(chk_format format, const void *w, const uint16_t *scales,
                                                                         long cols, long r, long block, __m256 out[4]) {
    if (format == CHK_Q4_0) q4_block8x4(w, scales, cols, r, block, out);
    else q8_block8x4(w, scales, cols, r, block, out);
}

// Eight consecutive weights W[r, k ..< k+count] (count ≤ 8; the rest zero) as float32.
AVX2 static inline __attribute__((always_inline)) __m256 load8(chk_format format, const void *w, const uint16_t *scales, long cols, long r, long k, int count) {
    switch (format) {
    case CHK_F32: {
        const float *p = (const float *)w + r * cols + k;
        if (count == 8) return f32x8(p);
        float t[8] = {0};
        memcpy(t, p, sizeof(float) * (size_t)count);
        return f32x8(t);
    }
    case CHK_F16: case CHK_BF16: {
        const uint16_t *p = (const uint16_t *)w + r * cols + k;
        uint16_t t[8] = {0};
        if (count < 8) p = memcpy(t, p, 2 * (size_t)count);
        return format == CHK_F16 ? f16x8(p) : bf16x8(p);
    }
    case CHK_Q8_0: case CHK_Q4_0: {  // (the packing unpacks these a whole block at a time; k a multiple of 8)
        __m256 v[4];
        quantized_block8x4(format, w, scales, cols, r, k / CHK_BLOCK, v);
        return v[k % CHK_BLOCK / 8];
    }
    case CHK_Q6_0: {  // eight codes (k a multiple of 8)
        int32_t codes[8];
        float d = _cvtsh_ss(scales[q6_centred_codes(w, cols, r, k, 8, codes)]);
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)codes)), _mm256_set1_ps(d));
    }
    }
    return _mm256_setzero_ps();
}

// Transposes 8 rows × 8 columns held in v[0..7] and stores column c as dst[c * stride ..< +8] for the
// first `count` columns; with stride MR2 (6) only each column's first six lanes are kept: a column's
// last two lanes are written over by the next column, and the last column is stored in two parts.
AVX2 static inline void transpose8_store(const __m256 v[8], float *dst, long stride, int count) {
    __m256 t[8], u[8], column[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    // u[j] (rows 0-3) and u[4 + j] (rows 4-7) hold columns j and j + 4 in their two 128-bit halves.
    for (int j = 0; j < 4; j++) {
        column[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        column[j + 4] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
    if (stride >= 8) {
        for (int c = 0; c < count; c++) _mm256_storeu_ps(dst + c * stride, column[c]);
        return;
    }
    for (int c = 0; c + 1 < count; c++) _mm256_storeu_ps(dst + c * stride, column[c]);
    float *last = dst + (count - 1) * stride;
    _mm_storeu_ps(last, _mm256_castps256_ps128(column[count - 1]));
    _mm_storel_pi((__m64 *)(last + 4), _mm256_extractf128_ps(column[count - 1], 1));
}

// Eight weight rows [r0, r0 + 8) (beyond `n` zero), columns [k0, k0 + kc), of a float format or
// q6_0 into 8 columns of a panel of NR2, 8 × 8 at a time (as above; with AVX2's half-speed kernel
// the memory was already hidden: paired f32/f16 GEMMs level to +1 %).
AVX2 static inline __attribute__((always_inline)) void pack_rows8(chk_format format, const void *w, const uint16_t *scales, long n,
                                                                 long cols, long r0, long k0, long kc, float *dst) {
    long rows = n - r0 < 8 ? n - r0 : 8;
    for (long k = 0; k < kc; k += 8) {
        int count = kc - k < 8 ? (int)(kc - k) : 8;
        if (format != CHK_Q6_0) prefetch_packing(format, w, cols, r0, rows, k0, kc, k);
        __m256 v[8];
        for (int i = 0; i < 8; i++) v[i] = i < rows ? load8(format, w, scales, cols, r0 + i, k0 + k, count) : _mm256_setzero_ps();
        transpose8_store(v, dst + k * NR2, NR2, count);
    }
}

// Weight rows [n0, n0 + rows) (beyond `n` zero), columns [k0, k0 + kc), into panels wp[panel][k][NR2]:
// 8 rows × 8 columns loaded, transposed and stored as 8 half-rows of a panel at a time (q4_0 and
// q8_0: 8 rows × a block of 32, each row's block unpacked at once, then four transposes).
AVX2 static void pack_weights_avx2(chk_format format, const void *w, const uint16_t *scales, long n, long cols,
                                   long n0, long rows, long k0, long kc, void *out) {
    float *wp = out;
    for (long p = 0; p < (rows + NR2 - 1) / NR2; p++) {
        float *panel = wp + p * kc * NR2;
        for (int half = 0; half < 2; half++) {
            long r0 = n0 + p * NR2 + half * 8;
            if (format == CHK_Q4_0 || format == CHK_Q8_0) {  // k0 and kc are whole blocks (chk_gemm_nt_parts checks)
                for (long k = 0; k < kc; k += CHK_BLOCK) {
                    __m256 tiles[4][8];  // [columns / 8][row]
                    for (int i = 0; i < 8; i++) {
                        __m256 v[4];
                        if (r0 + i < n) quantized_block8x4(format, w, scales, cols, r0 + i, (k0 + k) / CHK_BLOCK, v);
                        else v[0] = v[1] = v[2] = v[3] = _mm256_setzero_ps();
                        for (int q = 0; q < 4; q++) tiles[q][i] = v[q];
                    }
                    for (int q = 0; q < 4; q++) transpose8_store(tiles[q], panel + (k + 8 * q) * NR2 + half * 8, NR2, 8);
                }
                continue;
            }
            float *dst = panel + half * 8;
            switch (format) {
            case CHK_F32: pack_rows8(CHK_F32, w, scales, n, cols, r0, k0, kc, dst); break;
            case CHK_F16: pack_rows8(CHK_F16, w, scales, n, cols, r0, k0, kc, dst); break;
            case CHK_BF16: pack_rows8(CHK_BF16, w, scales, n, cols, r0, k0, kc, dst); break;
            default: pack_rows8(format, w, scales, n, cols, r0, k0, kc, dst); break;  // q6_0 (kc a multiple of 32)
            }
        }
    }
}

// X rows [r0, r0 + MR2) (beyond m zero), columns [0, k), into dst[k][MR2]: an 8 × 8 transpose at a time.
AVX2 static void pack_x_rows_avx2(const float *x, long ldx, long m, long k, long r0, void *out) {
    float *dst = out;
    _Static_assert(MR2 == 6, "transpose8_store keeps six lanes of a column when its stride is below 8");
    for (long c = 0; c < k; c += 8) {
        int count = k - c < 8 ? (int)(k - c) : 8;
        __m256 v[8];
        for (int i = 0; i < 8; i++) v[i] = i < MR2 && r0 + i < m ? load8(CHK_F32, x, NULL, ldx, r0 + i, c, count) : _mm256_setzero_ps();
        transpose8_store(v, dst + c * MR2, MR2, count);
    }
}

// C[rows, cols] (+)= xp[kc][MR2] · wp[kc][NR2] (+ bias), rows ≤ MR2 and cols ≤ NR2 stored.
AVX2 static void kernel_6x16_avx2(long kc, const void *xpanel, const void *wpanel, chk_format format, const float *bias, float *c,
                                  long ldc, int accumulate, long rows, long cols) {
    (void)format;
    const float *xp = xpanel, *wp = wpanel;
    __m256 acc[MR2][2];
    for (int i = 0; i < MR2; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (long k = 0; k < kc; k++, xp += MR2, wp += NR2) {
        __m256 b0 = _mm256_loadu_ps(wp), b1 = _mm256_loadu_ps(wp + 8);
        _mm_prefetch((const char *)(wp + 8 * NR2), _MM_HINT_T0);
        for (int i = 0; i < MR2; i++) {
            __m256 a = _mm256_broadcast_ss(xp + i);
            acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
        }
    }
    float edge[NR2];
    for (int i = 0; i < MR2 && i < rows; i++) {
        float *row = c + i * ldc;
        if (bias) {
            float b[NR2] = {0};
            memcpy(b, bias, sizeof(float) * (size_t)cols);
            acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(b));
            acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(b + 8));
        }
        if (cols == NR2) {
            if (accumulate) {
                acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(row));
                acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(row + 8));
            }
            _mm256_storeu_ps(row, acc[i][0]);
            _mm256_storeu_ps(row + 8, acc[i][1]);
        } else {  // a ragged last panel: only its first `cols` columns exist
            _mm256_storeu_ps(edge, acc[i][0]);
            _mm256_storeu_ps(edge + 8, acc[i][1]);
            for (long j = 0; j < cols; j++) row[j] = accumulate ? row[j] + edge[j] : edge[j];
        }
    }
}

// MARK: - The C tile of the 32-wide micro-kernels (int8, bfloat16)

// The int8 and bfloat16 micro-kernels' tile of C, rows (≤ 12) × cols (≤ 32) of 32-wide rows: its
// lines prefetched as the kernel starts (they arrive during its loop, as kernel_body's), and the
// accumulators stored (+ bias, + C when accumulating).
AVX512 static inline __attribute__((always_inline)) void prefetch_tile32(float *c, long ldc, long rows) {
    for (long i = 0; i < rows; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_ET0);
        _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_ET0);
    }
}
// (mr, the accumulators' rows, a constant: the loop unrolls and they stay in registers.)
AVX512 static inline __attribute__((always_inline)) void store_tile32(__m512 (*acc)[2], const int mr, long rows, long cols, const float *bias,
                                                                      float *c, long ldc, int accumulate) {
    __mmask16 m0 = first_lanes(cols), m1 = first_lanes(cols - 16);
    __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 bias1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    for (int i = 0; i < mr && i < rows; i++) {
        float *row = c + i * ldc;
        __m512 v0 = _mm512_add_ps(acc[i][0], bias0), v1 = _mm512_add_ps(acc[i][1], bias1);
        if (accumulate) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row + 16));
        }
        _mm512_mask_storeu_ps(row, m0, v0);
        _mm512_mask_storeu_ps(row + 16, m1, v1);
    }
}

// MARK: - int8 products of quantized weights (AVX-512 VNNI)

// q8_0, q4_0 and q6_0 weights against activations quantized as decode quantizes them (int8 blocks of 32
// with a float scale, chk_quantize_blocks): vpdpbusd does 64 byte products per instruction, two
// per cycle, where the float micro-kernel does 16 FMAs (measured here: 250 GMAC/s a core in the
// micro-kernel against 82 for float32 FMAs). As in decode the weights are made unsigned — q8_0 as
// w + 128, q4_0 as its nibble w + 8, q6_0 as its code w + 32 — and each block's integer sum starts
// at the surplus (−offset · Σq of the activation's block), so Σ (w + offset)·q − offset·Σq = Σ w·q.
// The block's sum is then scaled by both scales into float accumulators: 6 rows × 32 columns keep
// 12 integer and 12 float accumulators, two weight vectors and a broadcast in the 32 registers.
#define AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c,avx2")))
enum { I8_MR = 6, I8_NR = 32, I8_KC = 2048 };
// A block of 32 columns of a packed X panel: codes [8 quads][I8_MR rows][4 bytes], then per row
// the scale (float) and the surplus for each weight offset (int32 [3][I8_MR]: 8, 32 and 128).
enum { I8_X_CODES = 8 * I8_MR * 4, I8_X_BLOCK = I8_X_CODES + I8_MR * 4 + 3 * I8_MR * 4 };
// A block of a packed W panel: unsigned codes [8 quads][I8_NR columns][4 bytes], then the
// columns' scales (float [I8_NR]).
enum { I8_W_CODES = 8 * I8_NR * 4, I8_W_BLOCK = I8_W_CODES + I8_NR * 4 };

static long int8_x_panel_bytes(long kc) { return kc / CHK_BLOCK * I8_X_BLOCK; }
static long int8_w_panel_bytes(long kc) { return kc / CHK_BLOCK * I8_W_BLOCK; }

// A chunk of at most I8_KC columns of pack_x_int8.
static void pack_x_int8_chunk(const float *x, long ldx, long m, long k, long r0, uint8_t *dst) {
    int8_t q[I8_KC]; float scales[I8_KC / CHK_BLOCK];
    for (int i = 0; i < I8_MR; i++) {
        int real = r0 + i < m;
        if (real) chk_quantize_blocks(x + (r0 + i) * ldx, k, q, scales);
        else memset(q, 0, (size_t)k);
        for (long b = 0; b < k / CHK_BLOCK; b++) {
            uint8_t *block = dst + b * I8_X_BLOCK;
            float *xs = (float *)(block + I8_X_CODES);
            int32_t *surplus = (int32_t *)(xs + I8_MR), sum = 0;
            for (int quad = 0; quad < 8; quad++) memcpy(block + (quad * I8_MR + i) * 4, q + b * CHK_BLOCK + quad * 4, 4);
            for (int e = 0; e < CHK_BLOCK; e++) sum += q[b * CHK_BLOCK + e];
            xs[i] = real ? scales[b] : 0;
            surplus[i] = -8 * sum; surplus[I8_MR + i] = -32 * sum; surplus[2 * I8_MR + i] = -128 * sum;
        }
    }
}

// X rows [r0, r0 + I8_MR) (beyond m zero), columns [0, k) (whole blocks), quantized into a panel
// (I8_KC columns at a time).
static void pack_x_int8(const float *x, long ldx, long m, long k, long r0, void *out) {
    for (long c0 = 0; c0 < k; c0 += I8_KC) {
        long kc = k - c0 < I8_KC ? k - c0 : I8_KC;
        pack_x_int8_chunk(x + c0, ldx, m, kc, r0, (uint8_t *)out + int8_x_panel_bytes(c0));
    }
}

// The 32 codes of block `block` of row r, made unsigned (w + offset), in element order.
AVX512VNNI static inline void unsigned_codes(chk_format format, const void *w, long cols, long r, long block, uint8_t out[32]) {
    if (format == CHK_Q8_0) {
        __m256i v = _mm256_loadu_si256((const __m256i *)((const int8_t *)w + r * cols + block * CHK_BLOCK));
        _mm256_storeu_si256((__m256i *)out, _mm256_xor_si256(v, _mm256_set1_epi8((char)0x80)));
    } else if (format == CHK_Q4_0) {  // byte j holds elements j (low nibble) and j + 16 (high)
        __m128i bytes = _mm_loadu_si128((const __m128i *)((const uint8_t *)w + (r * cols + block * CHK_BLOCK) / 2)), low = _mm_set1_epi8(15);
        _mm_storeu_si128((__m128i *)out, _mm_and_si128(bytes, low));
        _mm_storeu_si128((__m128i *)(out + 16), _mm_and_si128(_mm_srli_epi16(bytes, 4), low));
    } else {  // q6_0 (only a tied head, and prefill multiplies it for one row: code at a time)
        const uint8_t *row = (const uint8_t *)w + r * (cols / CHK_BLOCK) * Q6_BLOCK_BYTES;
        for (int e = 0; e < CHK_BLOCK; e++) out[e] = (uint8_t)q6_code(row, cols / CHK_BLOCK, block, e);
    }
}

// Weight rows [n0, n0 + rows) (beyond n zero), columns [k0, k0 + kc), into panels of I8_NR rows:
// each row's block as eight 4-byte groups, transposed so that a vector holds one group of 16 rows.
AVX512VNNI static void pack_w_int8(chk_format format, const void *w, const uint16_t *scales, long n, long cols,
                                   long n0, long rows, long k0, long kc, void *out) {
    uint8_t stage[I8_NR * CHK_BLOCK];
    const __m512i byRow = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                             _mm512_set1_epi32(CHK_BLOCK));
    for (long p = 0; p < (rows + I8_NR - 1) / I8_NR; p++) {
        uint8_t *panel = (uint8_t *)out + p * int8_w_panel_bytes(kc);
        for (long b = 0; b < kc / CHK_BLOCK; b++) {
            uint8_t *block = panel + b * I8_W_BLOCK;
            float *ws = (float *)(block + I8_W_CODES);
            for (int c = 0; c < I8_NR; c++) {
                long r = n0 + p * I8_NR + c, real = c < rows - p * I8_NR && r < n;
                if (real) unsigned_codes(format, w, cols, r, (k0 / CHK_BLOCK) + b, stage + c * CHK_BLOCK);
                else memset(stage + c * CHK_BLOCK, 0, CHK_BLOCK);
                ws[c] = real ? _cvtsh_ss(scales[r * (cols / CHK_BLOCK) + k0 / CHK_BLOCK + b]) : 0;
            }
            for (int quad = 0; quad < 8; quad++)
                for (int half = 0; half < 2; half++)
                    _mm512_storeu_si512(block + quad * I8_NR * 4 + half * 64,
                                        _mm512_i32gather_epi32(byRow, stage + half * 16 * CHK_BLOCK + quad * 4, 1));
        }
    }
}

// C[rows, cols] (+)= an X panel times a W panel (+ bias), rows ≤ I8_MR and cols ≤ I8_NR stored;
// `offset` picks the surplus (0, 1, 2: weights offset by 8, 32, 128).
AVX512VNNI static inline __attribute__((always_inline)) void int8_kernel_body(long kc, const uint8_t *xp, const uint8_t *wp,
    const float *bias, float *c, long ldc, int accumulate, long rows, long cols, const int offset) {
    prefetch_tile32(c, ldc, rows);
    __m512 f[I8_MR][2];
    for (int i = 0; i < I8_MR; i++) f[i][0] = f[i][1] = _mm512_setzero_ps();
    for (long b = 0; b < kc / CHK_BLOCK; b++, xp += I8_X_BLOCK, wp += I8_W_BLOCK) {
        const float *xs = (const float *)(xp + I8_X_CODES);
        const int32_t *surplus = (const int32_t *)(xs + I8_MR) + offset * I8_MR;
        __m512i a[I8_MR][2];
        for (int i = 0; i < I8_MR; i++) a[i][0] = a[i][1] = _mm512_set1_epi32(surplus[i]);
        for (int quad = 0; quad < 8; quad++) {
            __m512i w0 = _mm512_loadu_si512(wp + quad * I8_NR * 4), w1 = _mm512_loadu_si512(wp + quad * I8_NR * 4 + 64);
            for (int i = 0; i < I8_MR; i++) {
                int32_t four;
                memcpy(&four, xp + (quad * I8_MR + i) * 4, 4);
                __m512i x = _mm512_set1_epi32(four);
                a[i][0] = _mm512_dpbusd_epi32(a[i][0], w0, x);
                a[i][1] = _mm512_dpbusd_epi32(a[i][1], w1, x);
            }
        }
        const float *ws = (const float *)(wp + I8_W_CODES);
        __m512 s0 = _mm512_loadu_ps(ws), s1 = _mm512_loadu_ps(ws + 16);
        for (int i = 0; i < I8_MR; i++) {
            __m512 d = _mm512_set1_ps(xs[i]);
            f[i][0] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a[i][0]), d), s0, f[i][0]);
            f[i][1] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a[i][1]), d), s1, f[i][1]);
        }
    }
    store_tile32(f, I8_MR, rows, cols, bias, c, ldc, accumulate);
}

AVX512VNNI static void kernel_int8(long kc, const void *xp, const void *wp, chk_format format, const float *bias, float *c,
                                   long ldc, int accumulate, long rows, long cols) {
    switch (format) {
    case CHK_Q4_0: int8_kernel_body(kc, xp, wp, bias, c, ldc, accumulate, rows, cols, 0); break;
    case CHK_Q6_0: int8_kernel_body(kc, xp, wp, bias, c, ldc, accumulate, rows, cols, 1); break;
    default: int8_kernel_body(kc, xp, wp, bias, c, ldc, accumulate, rows, cols, 2); break;  // q8_0
    }
}

// MARK: - bfloat16 products (AVX-512 BF16)

// bf16 weights against X rounded to bfloat16, as every product of bf16 weights multiplies it
// (chk_bf16_roundtrip): vdpbf16ps sums two products per lane, 32 multiply-adds an instruction to the
// FMA's 16. Where it runs at the FMA's rate (AMD's Zen 4 and 5: 215 G multiply-adds a second per
// core measured on a Zen 5, 114 for float32 FMAs) that doubles the GEMM's peak; Intel's runs it at
// half that rate (42 against 87 on the Xeon of docs/performance.md), no faster than widening the
// weights for the float micro-kernel, which stays the choice there. Pairs of K: X panels are
// [pair][B16_MR rows] and W panels [pair][B16_NR rows] of 32-bit (element 2p, 2p + 1) pairs, an odd
// last element paired with 0; the 12 × 32 micro-kernel broadcasts an X pair against two W vectors.
#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c,avx2")))
enum { B16_MR = 12, B16_NR = 32, B16_KC = 1024 };  // a slice's panels as many bytes as float32's (KC)

static long bf16_x_panel_bytes(long kc) { return (kc + 1) / 2 * B16_MR * 4; }
static long bf16_w_panel_bytes(long kc) { return (kc + 1) / 2 * B16_NR * 4; }

// X rows [r0, r0 + B16_MR) (beyond m zero), columns [0, k), rounded to bfloat16 as chk_to_bf16 rounds.
static void pack_x_bf16(const float *x, long ldx, long m, long k, long r0, void *out) {
    uint32_t *panel = out;
    enum { CHUNK = 512 };
    uint16_t h[CHUNK + 1];
    for (int i = 0; i < B16_MR; i++) {
        for (long c0 = 0; c0 < k; c0 += CHUNK) {
            long n = k - c0 < CHUNK ? k - c0 : CHUNK;
            if (r0 + i < m) chk_to_bf16(x + (r0 + i) * ldx + c0, n, h);
            else memset(h, 0, sizeof h);
            h[n] = 0;  // an odd last element's partner
            for (long p = 0; p < (n + 1) / 2; p++) panel[(c0 / 2 + p) * B16_MR + i] = (uint32_t)h[2 * p] | (uint32_t)h[2 * p + 1] << 16;
        }
    }
}

// bf16 weight rows [n0, n0 + rows) (beyond n zero), columns [k0, k0 + kc), into panels of B16_NR rows:
// sixteen rows' next 16 pairs loaded as 16 vectors of 32-bit pairs and transposed, so that a vector
// holds one pair of sixteen rows.
AVX512BF16 static void pack_w_bf16(chk_format format, const void *w, const uint16_t *scales, long n, long cols,
                                   long n0, long rows, long k0, long kc, void *out) {
    (void)scales;
    const uint16_t *wh = w;
    long pairs = (kc + 1) / 2;
    for (long p = 0; p < (rows + B16_NR - 1) / B16_NR; p++) {
        float *panel = (float *)((char *)out + p * bf16_w_panel_bytes(kc));
        for (int half = 0; half < 2; half++) {
            long first = n0 + p * B16_NR + half * 16, real = rows - p * B16_NR - half * 16;
            if (real > 16) real = 16;
            if (first + real > n) real = n - first;
            for (long q = 0; q < pairs; q += 16) {
                long elements = kc - 2 * q < 32 ? kc - 2 * q : 32;
                __mmask32 mask = elements >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << elements) - 1);
                __m512 v[16];
                if (real > 0) prefetch_packing(format, w, cols, first, real, k0, kc, 2 * q);
                for (long i = 0; i < 16; i++)
                    v[i] = i < real ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(mask, wh + (first + i) * cols + k0 + 2 * q))
                                    : _mm512_setzero_ps();
                transpose16_store(v, panel + q * B16_NR + half * 16, B16_NR, (int)((elements + 1) / 2));
            }
        }
    }
}

// C[rows, cols] (+)= an X panel times a W panel (+ bias), rows ≤ B16_MR and cols ≤ B16_NR stored.
AVX512BF16 static void kernel_bf16(long kc, const void *xpv, const void *wpv, chk_format format, const float *bias, float *c, long ldc,
                                   int accumulate, long rows, long cols) {
    (void)format;
    const uint32_t *xp = xpv;
    const float *wp = wpv;
    prefetch_tile32(c, ldc, rows);
    __m512 acc[B16_MR][2];
    for (int i = 0; i < B16_MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (long p = 0; p < (kc + 1) / 2; p++, xp += B16_MR, wp += B16_NR) {
        __m512bh w0 = (__m512bh)_mm512_loadu_ps(wp), w1 = (__m512bh)_mm512_loadu_ps(wp + 16);
        for (int i = 0; i < B16_MR; i++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)xp[i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, w0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, w1);
        }
    }
    store_tile32(acc, B16_MR, rows, cols, bias, c, ldc, accumulate);
}

// MARK: - Threaded product

// One instruction set's packing and micro-kernel (their panel sizes mr × nr, K slices of at most
// kcMax), for the threaded product.
typedef struct {
    long mr, nr, kcMax;
    // X packed once for all K, its panels shared out over the threads, before the product (int8:
    // quantizing is worth sharing), or by each thread for itself a slice at a time (floats).
    int packXOnce;
    long (*x_panel_bytes)(long kc), (*w_panel_bytes)(long kc);  // a packed panel of a slice kc deep (linear in kc)
    void (*pack_x)(const float *x, long ldx, long m, long k, long r0, void *dst);
    void (*pack_w)(chk_format format, const void *w, const uint16_t *scales, long n, long cols, long n0, long rows, long k0, long kc,
                   void *wp);
    // C[rows, cols] (+)= an X panel times a W panel of `format`, rows ≤ mr and cols ≤ nr stored.
    void (*kernel)(long kc, const void *xp, const void *wp, chk_format format, const float *bias, float *c, long ldc, int accumulate,
                   long rows, long cols);
} gemm_isa;

AVX512 static void panel_kernel_avx512(long kc, const void *xp, const void *wp, chk_format format, const float *bias, float *c, long ldc,
                                       int accumulate, long rows, long cols) {
    (void)format;
    // The last panel of X may be short (CLIP's 577 rows end in one): a kernel of fewer rows.
    (rows == MR ? kernel_12x32 : small_kernel(rows, NR))(kc, xp, wp, NR, bias, c, ldc, accumulate, rows, cols, 0);
}
static long f32_x_panel_bytes(long kc) { return kc * MR * 4; }
static long f32_w_panel_bytes(long kc) { return kc * NR * 4; }
static long avx2_x_panel_bytes(long kc) { return kc * MR2 * 4; }
static long avx2_w_panel_bytes(long kc) { return kc * NR2 * 4; }
static const gemm_isa gemm_avx512 = {MR, NR, KC, 0, f32_x_panel_bytes, f32_w_panel_bytes, pack_x_rows, pack_weights, panel_kernel_avx512};
static const gemm_isa gemm_avx2 = {MR2, NR2, KC, 0, avx2_x_panel_bytes, avx2_w_panel_bytes, pack_x_rows_avx2, pack_weights_avx2,
                                   kernel_6x16_avx2};
static const gemm_isa gemm_int8 = {I8_MR, I8_NR, I8_KC, 1, int8_x_panel_bytes, int8_w_panel_bytes, pack_x_int8, pack_w_int8, kernel_int8};
static const gemm_isa gemm_bf16 = {B16_MR, B16_NR, B16_KC, 1, bf16_x_panel_bytes, bf16_w_panel_bytes, pack_x_bf16, pack_w_bf16,
                                   kernel_bf16};

typedef struct {
    const gemm_isa *isa;
    const chk_gemm_part *parts; int count;
    long firstBlock[CHK_GEMM_PARTS + 1];  // block b belongs to part i when firstBlock[i] <= b < firstBlock[i + 1]
    const float *x; long ldx;
    const char *xPacked;  // packXOnce: X's panels for all K, x_panel_bytes(k) apart
    long m, k, nb, kc, slices;  // nb: weight rows per block (≤ NB); K in `slices` slices of kc (the last shorter)
    _Atomic long *nextBlock;   // per slice: the next block to claim
    _Atomic long *slicesDone;  // per block: how many of its slices are in C
    _Atomic int failed;        // a thread could not allocate its scratch: the caller falls back
} gemm_job;

// The row length of a part's W (wcols, or k when 0: the whole rows).
static inline long part_row_length(const chk_gemm_part *part, long k) { return part->wcols ? part->wcols : k; }

// One per thread. Slice by slice, the thread claims blocks of weight rows; for the first block it
// gets in a slice it packs that slice of X for itself (m × kc floats, in its own L2 for the slice:
// a second copy of X costs less than making the threads meet after packing a shared one), then per
// block converts and packs the block's slice of W and runs the micro-kernel over every X panel.
// The first slice stores C (with the bias), later ones add to it, so a block waits (rarely: it
// was claimed a whole slice earlier) until its previous slice is done. No barrier between slices:
// a thread that finishes a slice early goes on to the next.
static void gemm_thread_task(void *context, long t0, long t1) {
    (void)t0; (void)t1;
    gemm_job *j = context;
    const gemm_isa *isa = j->isa;
    const long mr = isa->mr, nr = isa->nr;
    long blocks = j->firstBlock[j->count], xPanels = (j->m + mr - 1) / mr;
    long xBytes = isa->x_panel_bytes(j->kc), wBytes = isa->w_panel_bytes(j->kc);  // a whole slice's panels (a last one is shorter)
    char *wp = (char *)chk_scratch(1, ((NB + nr - 1) / nr * wBytes + 3) / 4);
    char *xp = j->xPacked ? NULL : (char *)chk_scratch(0, (xPanels * xBytes + 3) / 4);
    if (!wp || !(xp || j->xPacked)) atomic_store(&j->failed, 1);  // still goes through its claims, so no one waits forever
    for (long s = 0; s < j->slices; s++) {
        long k0 = s * j->kc, kc = j->k - k0 < j->kc ? j->k - k0 : j->kc;
        int packedX = j->xPacked != NULL;
        for (long b; (b = atomic_fetch_add(&j->nextBlock[s], 1)) < blocks;) {
            for (unsigned spins = 0; atomic_load_explicit(&j->slicesDone[b], memory_order_acquire) < s; spins++) {
                if (spins < 4096) _mm_pause(); else sched_yield();
            }
            if (wp && (xp || j->xPacked)) {
                if (!packedX) {
                    for (long p = 0; p < xPanels; p++) isa->pack_x(j->x + k0, j->ldx, j->m, kc, p * mr, xp + p * isa->x_panel_bytes(kc));
                    packedX = 1;
                }
                int i = 0;
                while (b >= j->firstBlock[i + 1]) i++;
                const chk_gemm_part *part = &j->parts[i];
                long n0 = (b - j->firstBlock[i]) * j->nb, rows = part->n - n0 < j->nb ? part->n - n0 : j->nb;
                isa->pack_w(part->format, part->w, part->scales, part->n, part_row_length(part, j->k), n0, rows, part->wk0 + k0, kc, wp);
                for (long p = 0; p < xPanels; p++) {
                    const char *xpanel = j->xPacked ? j->xPacked + p * isa->x_panel_bytes(j->k) + isa->x_panel_bytes(k0)
                                                    : xp + p * isa->x_panel_bytes(kc);
                    long mrows = j->m - p * mr < mr ? j->m - p * mr : mr;
                    for (long q = 0; q * nr < rows; q++) {
                        long ncols = rows - q * nr < nr ? rows - q * nr : nr;
                        const float *bias = k0 == 0 && part->bias ? part->bias + n0 + q * nr : NULL;
                        isa->kernel(kc, xpanel, wp + q * isa->w_panel_bytes(kc), part->format, bias, part->c + p * mr * part->ldc + n0 + q * nr,
                                    part->ldc, k0 > 0 || part->accumulate, mrows, ncols);
                    }
                }
            }
            atomic_store_explicit(&j->slicesDone[b], s + 1, memory_order_release);
        }
    }
}

int chk_attention_available(void) {
    __builtin_cpu_init();
    return chk_avx512_allowed() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

// The product's instruction set on this CPU (as the kernels allow it), or NULL.
static const gemm_isa *gemm_isa_here(void) {
    if (chk_attention_available()) return &gemm_avx512;
    return chk_avx2_allowed() ? &gemm_avx2 : NULL;
}

int chk_gemm_available(void) { return gemm_isa_here() != NULL; }

// Weight rows per block: NB, or fewer when that shares the blocks out more evenly. The threads
// finish together only if the block count divides well: SigLIP's 1152 rows are 9 blocks of 128
// (one thread does 5, the other 4: 10 % idle) but 12 of 96.
static long balanced_block_rows(const chk_gemm_part *parts, int count, int threads) {
    if (threads < 1) threads = 1;
    long best = NB, bestSpan = -1;
    for (long nb = NB; nb >= NR * 2; nb -= NR) {
        long blocks = 0;
        for (int i = 0; i < count; i++) blocks += (parts[i].n + nb - 1) / nb;
        long span = (blocks + threads - 1) / threads * nb;  // rows done by the busiest thread, at most
        if (bestSpan < 0 || span < bestSpan) { best = nb; bestSpan = span; }
    }
    return best;
}

// X panels [p0, p1) of a packXOnce product, for all K.
static void pack_x_task(void *context, long p0, long p1) {
    const gemm_job *j = context;
    for (long p = p0; p < p1; p++)
        j->isa->pack_x(j->x, j->ldx, j->m, j->k, p * j->isa->mr, (char *)j->xPacked + p * j->isa->x_panel_bytes(j->k));
}

// One product on `isa`, its parts' rows shared out as blocks (the parts already checked).
static int run_gemm(const gemm_isa *isa, const chk_gemm_part *parts, int count, long k, const float *x, long ldx, long m, int threads) {
    // Slices of K as even as whole blocks of 32 allow (SigLIP's 1152 = 3 × 384, not 512 + 512 + 128:
    // a short last slice would cost a pass over C for little work).
    long slices = (k + isa->kcMax - 1) / isa->kcMax, kc = ((k + slices - 1) / slices + 31) / 32 * 32;
    if (kc > isa->kcMax) kc = isa->kcMax;
    gemm_job job = {isa, parts, count, {0}, x, ldx, NULL, m, k, balanced_block_rows(parts, count, threads), kc, (k + kc - 1) / kc,
                    NULL, NULL, 0};
    for (int i = 0; i < count; i++) job.firstBlock[i + 1] = job.firstBlock[i] + (parts[i].n + job.nb - 1) / job.nb;
    if (isa->packXOnce) {  // in the calling thread's scratch, which its share of the product then leaves alone
        char *packed = (char *)chk_scratch(0, ((m + isa->mr - 1) / isa->mr * isa->x_panel_bytes(k) + 3) / 4);
        if (!packed) return 0;
        job.xPacked = packed;
        chk_parallel_for((m + isa->mr - 1) / isa->mr, 1, threads, pack_x_task, &job);
    }
    long blocks = job.firstBlock[count];
    _Atomic long *counters = calloc((size_t)(job.slices + blocks), sizeof(_Atomic long));
    if (!counters) return 0;
    job.nextBlock = counters; job.slicesDone = counters + job.slices;
    chk_parallel_for(threads, 1, threads, gemm_thread_task, &job);
    free(counters);
    return !atomic_load(&job.failed);
}

static int forced_float_gemm, forced_bf16_gemm;

// Whether quantized weights take the int8 product here (AVX-512 with VNNI, allowed, not forced off).
static int int8_gemm_here(void) {
    __builtin_cpu_init();
    return !forced_float_gemm && chk_attention_available() && __builtin_cpu_supports("avx512vnni");
}

// Whether this CPU can run the bfloat16 product (AVX-512 BF16, allowed), and whether bf16 weights
// take it: by default on AMD's CPUs, whose vdpbf16ps runs at the rate of their FMAs (Intel's at half).
static int bf16_gemm_possible(void) {
    __builtin_cpu_init();
    return chk_attention_available() && __builtin_cpu_supports("avx512bf16");
}
static int bf16_gemm_here(void) {
    if (forced_float_gemm || !bf16_gemm_possible()) return 0;
    return forced_bf16_gemm || __builtin_cpu_is("amd");
}

int chk_force_float_gemm(int on) {
    forced_float_gemm = 0;
    int here = int8_gemm_here();
    forced_float_gemm = on;
    return here;
}

int chk_force_bf16_gemm(int on) {
    forced_bf16_gemm = on;
    return bf16_gemm_possible();
}

const char *chk_bf16_gemm_kind(void) { return bf16_gemm_here() ? "bf16-dot" : "float"; }

// Quantized weights multiply the activation as decode's products do, quantized in blocks of 32 —
// on every path, so that prefill and decode, and CPUs with and without VNNI, agree: the int8
// product quantizes X as it packs it; the float one multiplies X rounded through the same
// quantization (chk_quantize_roundtrip). bf16 parts likewise multiply X rounded to bfloat16 (the
// dot-product GEMM as it packs X, the float one a rounded copy). f32 and f16 parts multiply X
// itself. Each kind runs in its own pass.
int chk_gemm_nt_parts(const chk_gemm_part *parts, int count, long k, const float *x, long ldx, long m, int threads) {
    const gemm_isa *isa = gemm_isa_here();
    if (count < 1 || count > CHK_GEMM_PARTS || !isa || k < 1) return 0;  // (k = 0: no slices to cut; the callers' sgemm takes it)
    if (m <= 0) return 1;
    chk_gemm_part floats[CHK_GEMM_PARTS], quantized[CHK_GEMM_PARTS], bf16[CHK_GEMM_PARTS];
    int floatCount = 0, quantizedCount = 0, bf16Count = 0;
    for (int i = 0; i < count; i++) {
        long wcols = part_row_length(&parts[i], k);
        if (parts[i].wk0 < 0 || parts[i].wk0 + k > wcols) return 0;
        int blocked = chk_format_is_blocked(parts[i].format);
        if (blocked && (wcols % CHK_BLOCK || parts[i].wk0 % CHK_BLOCK || k % CHK_BLOCK)) return 0;
        if (blocked) quantized[quantizedCount++] = parts[i];
        else if (parts[i].format == CHK_BF16) bf16[bf16Count++] = parts[i];
        else floats[floatCount++] = parts[i];
    }
    // (A failure after the float parts are done leaves the caller to recompute them all: groups of
    // several parts never accumulate.)
    if (floatCount && !run_gemm(isa, floats, floatCount, k, x, ldx, m, threads)) return 0;
    if (bf16Count && isa == &gemm_avx512 && bf16_gemm_here()) {
        if (!run_gemm(&gemm_bf16, bf16, bf16Count, k, x, ldx, m, threads)) return 0;
        bf16Count = 0;
    }
    int int8 = quantizedCount && isa == &gemm_avx512 && int8_gemm_here();
    if (int8 && !run_gemm(&gemm_int8, quantized, quantizedCount, k, x, ldx, m, threads)) return 0;
    // The rest multiply X rounded as their format's products round it, with the float micro-kernel.
    const chk_gemm_part *groups[2] = {bf16, quantized};
    int counts[2] = {bf16Count, int8 ? 0 : quantizedCount};
    float *rounded = NULL;
    for (int g = 0; g < 2; g++) {
        if (!counts[g]) continue;
        if (!rounded && !(rounded = malloc(sizeof(float) * (size_t)(m * k)))) return 0;
        chk_round_activation(groups[g][0].format, x, ldx, m, k, rounded, k, threads);
        if (!run_gemm(isa, groups[g], counts[g], k, rounded, k, m, threads)) { free(rounded); return 0; }
    }
    free(rounded);
    return 1;
}

int chk_gemm_nt(chk_format format, const void *w, const uint16_t *scales, long n, long k, const float *bias,
                const float *x, long ldx, long m, float *c, long ldc, int accumulate, int threads) {
    chk_gemm_part part = {format, w, scales, n, bias, c, ldc, accumulate, 0, 0};
    return chk_gemm_nt_parts(&part, 1, k, x, ldx, m, threads);
}

// MARK: - Attention (prefill, decode, encoders)

typedef struct {
    const float *q; long ldq, qHeadStride;  // query t of head h at q + t·ldq + h·qHeadStride
    chk_kv_view kv;
    long tokens, keyCount, heads, kvHeads, headDim;
    long chunks;  // each head's blocks of MR queries in `chunks` work items
    float scale; long causalOffset;
    float *out; long ldo, oHeadStride;  // laid out as q
    _Atomic int failed;  // a thread could not allocate its scratch: the caller falls back
} attention_job;

// Queries r0 ..< r0 + rows (ldq apart, hd wide) into qp[hd][MR] (other rows zero), times scale.
AVX512 static void pack_queries(const float *q, long ldq, long r0, long rows, long hd, float scale, float *qp) {
    pack_x_rows(q, ldq, r0 + rows, hd, r0, qp);
    __m512 f = _mm512_set1_ps(scale);
    for (long i = 0; i < hd * MR; i += 16) {
        __mmask16 m = first_lanes(hd * MR - i);
        _mm512_mask_storeu_ps(qp + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, qp + i), f));
    }
}

// row[0 ..< n] *= f.
AVX512 static void scale_row(float *row, long n, float f) {
    __m512 v = _mm512_set1_ps(f);
    for (long c = 0; c < n; c += 16) {
        __mmask16 m = first_lanes(n - c);
        _mm512_mask_storeu_ps(row + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + c), v));
    }
}

// Work item = (head, chunk of query blocks): gets K_h as panels (packing it once when it is given
// as rows), then per block of queries computes the scores against the visible keys, their softmax,
// and P · V_h, all with the micro-kernel.
AVX512 static void attention_task(void *context, long i0, long i1) {
    attention_job *j = context;
    const chk_kv_view *kv = &j->kv;
    long hd = j->headDim, keyPanels = (j->keyCount + NR - 1) / NR, ldS = keyPanels * NR;
    long blocks = (j->tokens + MR - 1) / MR, perChunk = (blocks + j->chunks - 1) / j->chunks;
    // V_h is read once per block of queries. Read more than once (several blocks, or heads sharing
    // it) with rows a kilobyte or more apart (a whole sequence's heads side by side), it is packed
    // as panels of NR columns, k-major: the micro-kernel would read such rows through a few cache
    // sets only. Otherwise (the cache's rows are one head wide; a block of decoded queries reads
    // it once) it is read in place.
    int packValues = (blocks > 1 || j->heads > j->kvHeads) && kv->ldv >= 256;
    long valuePanels = (hd + NR - 1) / NR;
    float *kp = kv->keyPanels ? NULL : chk_scratch(2, keyPanels * hd * NR), *scores = chk_scratch(3, MR * ldS);
    float *pp = chk_scratch(4, ldS * MR), *qp = chk_scratch(5, hd * MR), *vp = packValues ? chk_scratch(6, valuePanels * j->keyCount * NR) : NULL;
    if ((!kv->keyPanels && !kp) || !scores || !pp || !qp || (packValues && !vp)) { atomic_store(&j->failed, 1); return; }
    long currentHead = -1;
    const float *keyHead = NULL, *valueHead = NULL;
    for (long item = i0; item < i1; item++) {
        long h = item / j->chunks, chunk = item % j->chunks, kvHead = h / (j->heads / j->kvHeads);
        if (kvHead != currentHead) {
            const float *k = kv->keys + kvHead * kv->keyHeadStride, *v = kv->values + kvHead * kv->valueHeadStride;
            keyHead = kv->keyPanels ? k : kp;
            if (!kv->keyPanels) pack_weights(CHK_F32, k, NULL, j->keyCount, kv->ldk, 0, j->keyCount, 0, hd, kp);
            valueHead = packValues ? vp : v;
            for (long c = 0; packValues && c < valuePanels; c++) {
                long cols = hd - c * NR < NR ? hd - c * NR : NR;
                __mmask16 m0 = first_lanes(cols), m1 = first_lanes(cols - 16);
                for (long t = 0; t < j->keyCount; t++) {
                    const float *src = v + t * kv->ldv + c * NR;
                    float *dst = vp + (c * j->keyCount + t) * NR;
                    _mm512_storeu_ps(dst, _mm512_maskz_loadu_ps(m0, src));
                    _mm512_storeu_ps(dst + 16, _mm512_maskz_loadu_ps(m1, src + 16));
                }
            }
            currentHead = kvHead;
        }
        for (long b = chunk * perChunk; b < (chunk + 1) * perChunk && b < blocks; b++) {
            long r0 = b * MR, rows = j->tokens - r0 < MR ? j->tokens - r0 : MR;
            long visible = j->keyCount;
            if (j->causalOffset >= 0 && j->causalOffset + r0 + rows < visible) visible = j->causalOffset + r0 + rows;
            pack_queries(j->q + h * j->qHeadStride, j->ldq, r0, rows, hd, j->scale, qp);
            kernel_fn scoresKernel = small_kernel(rows, NR);
            for (long p = 0; p * NR < visible; p++)
                scoresKernel(hd, qp, keyHead + p * hd * NR, NR, NULL, scores + p * NR, ldS, 0, rows,
                             visible - p * NR < NR ? visible - p * NR : NR, 0);
            if (j->causalOffset >= 0)
                for (long i = 0; i < rows; i++)
                    for (long c = j->causalOffset + r0 + i + 1; c < visible; c++) scores[i * ldS + c] = -INFINITY;
            float sums[MR];
            chk_exp_rows(scores, rows, visible, ldS, sums, NULL);
            pack_x_rows(scores, ldS, rows, visible, 0, pp);
            float *o = j->out + r0 * j->ldo + h * j->oHeadStride;
            for (long c = 0; c < hd; c += NR)
                small_kernel(rows, hd - c)(visible, pp, packValues ? vp + c * j->keyCount : valueHead + c, packValues ? NR : kv->ldv,
                                           NULL, o + c, j->ldo, 0, rows, hd - c < NR ? hd - c : NR, 0);
            for (long i = 0; i < rows; i++) scale_row(o + i * j->ldo, hd, 1 / sums[i]);  // the softmax's division, on hd outputs
        }
    }
}

// Runs the job's heads × chunks items on `threads` threads, chunks chosen so that every thread
// can claim several items (a delayed thread then does not hold the rest up).
static int run_attention(attention_job *job, int threads) {
    long blocks = (job->tokens + MR - 1) / MR;
    job->chunks = (4L * threads + job->heads - 1) / job->heads;
    if (job->chunks > blocks) job->chunks = blocks;
    chk_parallel_for(job->heads * job->chunks, 1, threads, attention_task, job);
    return !atomic_load(&job->failed);
}

int chk_attention(const float *q, long ldq, const float *keys, const float *values, long ldkv, long tokens,
                  long keyCount, long heads, long kvHeads, long headDim, float scale, long causalOffset,
                  float *out, long ldo, int threads) {
    if (!chk_attention_available() || kvHeads <= 0 || heads % kvHeads) return 0;
    if (tokens <= 0) return 1;
    attention_job job = {q, ldq, headDim, {keys, ldkv, headDim, 0, values, ldkv, headDim}, tokens, keyCount, heads, kvHeads,
                         headDim, 1, scale, causalOffset, out, ldo, headDim, 0};
    return run_attention(&job, threads);
}

// MARK: - The KV cache's layout

_Static_assert(NR == CHK_KEY_PANEL, "the cache's key panels are the micro-kernel's");

// Where position t of KV head g is in the cache: its key's first dimension (the next ones NR
// floats apart) and its value row.
static inline long key_at(long g, long t, long headDim, long capacity) { return g * capacity * headDim + t / NR * headDim * NR + t % NR; }
static inline long value_at(long g, long t, long headDim, long capacity) { return (g * capacity + t) * headDim; }

// Decode appends one token's key as headDim writes NR floats apart (a line each) to lines the
// attention of earlier tokens read, often on the other core: prefetched before the token's q/k/v
// product, they arrive during it (the caller's append took 1.5–2.4 µs a Qwen2-0.5B layer; paired,
// in one process: decode +0.4–0.7 % in 5 runs; prefetchw instead of prefetcht0: level).
void chk_kv_prefetch_append(long position, long kvHeads, long headDim, long capacity, int half, void *keyPanels, void *values) {
    long element = half ? 2 : 4;
    for (long g = 0; g < kvHeads; g++) {
        const char *key = (const char *)keyPanels + key_at(g, position, headDim, capacity) * element;
        const char *value = (const char *)values + value_at(g, position, headDim, capacity) * element;
        for (long d = 0; d < headDim; d++) _mm_prefetch(key + d * NR * element, _MM_HINT_T0);
        for (long b = 0; b < headDim * element; b += 64) _mm_prefetch(value + b, _MM_HINT_T0);
    }
}

void chk_kv_append(const float *k, const float *v, long ld, long tokens, long position, long kvHeads, long headDim,
                   long capacity, int half, void *keyPanels, void *values) {
    for (long t = 0; t < tokens; t++) {
        long at = position + t;
        for (long g = 0; g < kvHeads; g++) {
            const float *key = k + t * ld + g * headDim, *value = v + t * ld + g * headDim;
            long keyAt = key_at(g, at, headDim, capacity), valueAt = value_at(g, at, headDim, capacity);
            if (half) {
                uint16_t keyHalves[headDim], *panel = (uint16_t *)keyPanels + keyAt;
                chk_to_f16(key, headDim, keyHalves);  // then spread down the panel, as below
                for (long d = 0; d < headDim; d++) panel[d * NR] = keyHalves[d];
                chk_to_f16(value, headDim, (uint16_t *)values + valueAt);
            } else {
                float *panel = (float *)keyPanels + keyAt;
                for (long d = 0; d < headDim; d++) panel[d * NR] = key[d];
                memcpy((float *)values + valueAt, value, sizeof(float) * (size_t)headDim);
            }
        }
    }
}

typedef struct {
    const uint16_t *keyPanels, *values; long keyCount, headDim, capacity; float *keysOut, *valuesOut;
} widen_job;

// Items: the keys (in whole panels) of KV head item / 2, or its values.
static void widen_task(void *context, long i0, long i1) {
    const widen_job *j = context;
    for (long item = i0; item < i1; item++) {
        long g = item / 2, keys = (j->keyCount + NR - 1) / NR * NR;
        if (item % 2 == 0)
            chk_rows_f16(j->keyPanels + key_at(g, 0, j->headDim, j->capacity), j->headDim, 0, keys, j->keysOut + key_at(g, 0, j->headDim, j->capacity));
        else
            chk_rows_f16(j->values + value_at(g, 0, j->headDim, j->capacity), j->headDim, 0, j->keyCount,
                         j->valuesOut + value_at(g, 0, j->headDim, j->capacity));
    }
}

void chk_kv_widen(const uint16_t *keyPanels, const uint16_t *values, long keyCount, long kvHeads, long headDim,
                  long capacity, float *keysOut, float *valuesOut, int threads) {
    widen_job job = {keyPanels, values, keyCount, headDim, capacity, keysOut, valuesOut};
    chk_parallel_for(2 * kvHeads, 1, threads, widen_task, &job);
}

void chk_kv_rows(const float *keyPanels, const float *values, long keyCount, long kvHeads, long headDim, long capacity,
                 float *keys, float *valueRows) {
    long width = kvHeads * headDim;
    for (long t = 0; t < keyCount; t++)
        for (long g = 0; g < kvHeads; g++) {
            const float *panel = keyPanels + key_at(g, t, headDim, capacity);
            for (long d = 0; d < headDim; d++) keys[t * width + g * headDim + d] = panel[d * NR];
            memcpy(valueRows + t * width + g * headDim, values + value_at(g, t, headDim, capacity), sizeof(float) * (size_t)headDim);
        }
}

// Decode over the cache: work item = (KV head, span of keys). An item computes, for the query
// heads of its KV head (rows of blocks of up to MR), the scores against its span's keys, their
// exp against the span's max, and P·V unnormalized; with one span it divides and writes the
// output, otherwise it leaves the span's output, maxes and sums in `partials` and the item that
// completes a head's spans last combines them (the softmax over all keys: each span's terms
// rescaled by exp(its max − the overall max)). Spans let every thread take part whatever the
// number of KV heads (Qwen2-0.5B has 2, Gemma-2B 1) and keep the threads' work even.
//
// A float32 cache is read from memory by the micro-kernels themselves, which prefetch each panel
// line (scores) and value row (P·V: by the 64-column kernel, or the first 32-column block of the
// rest of the row) FAR_BYTES ahead into L2 as they go;
// a thread's items are consecutive spans, so the prefetch runs on into its next span. Before, each
// span was first read into L2 by a plain loop and then computed from there — at the time faster
// than the kernel's own loads, but reading and computing did not overlap (paired, in one process: a
// Qwen2 layer +11–20 % at 840 positions, +5 % at 200, +8 % at 2000; TinyLlama +10 % at 840).
typedef struct {
    const float *q;           // the queries times the scale, then MR rows of zeros
    const void *keyPanels, *values; long capacity;  // the cache's layout (key_at, value_at)
    int half;                 // the cache holds float16 (read by the kernels' float16 variants)
    long keyCount, kvHeads, group, headDim, spans, spanKeys;
    float *out;
    float *partials;          // per (head, span): group × headDim outputs, group maxes, group sums
    _Atomic long *spansDone;  // per head
    _Atomic int failed;
} decode_job;

AVX512 static void decode_combine(const decode_job *j, long g) {
    long hd = j->headDim, G = j->group, stride = G * (hd + 2);
    const float *first = j->partials + g * j->spans * stride;
    for (long i = 0; i < G; i++) {
        float top = -INFINITY, total = 0;
        for (long s = 0; s < j->spans; s++) top = fmaxf(top, first[s * stride + G * hd + i]);
        float *o = j->out + (g * G + i) * hd;
        memset(o, 0, sizeof(float) * (size_t)hd);
        for (long s = 0; s < j->spans; s++) {
            const float *part = first + s * stride;
            float w = expf(part[G * hd + i] - top);
            total += w * part[G * hd + G + i];
            __m512 vw = _mm512_set1_ps(w);
            for (long c = 0; c < hd; c += 16) {
                __mmask16 m = first_lanes(hd - c);
                _mm512_mask_storeu_ps(o + c, m, _mm512_fmadd_ps(vw, _mm512_maskz_loadu_ps(m, part + i * hd + c), _mm512_maskz_loadu_ps(m, o + c)));
            }
        }
        scale_row(o, hd, 1 / total);
    }
}

AVX512 static void decode_task(void *context, long i0, long i1) {
    decode_job *j = context;
    long hd = j->headDim, G = j->group, ldS = (j->spanKeys + NR - 1) / NR * NR;
    float *scores = chk_scratch(3, MR * ldS);
    if (!scores) atomic_store(&j->failed, 1);  // still counts its spans, so a head is combined once
    // The cache is streamed from memory by the kernels, which prefetch the lines they will read
    // ahead (a key panel row's per step for the scores, the value rows' for P · V). A float16 cache
    // is read in place by the kernels' float16 variants, each vector widened as it is loaded (its
    // spans used to be widened into scratch first: a pass that read and computed nothing, so
    // memory and compute never overlapped, and float16 attention was slower than float32's).
    // Pointers into a float16 cache are typed float * for the kernels, with strides in floats
    // (half the halves): see ROWS_KERNEL.
    const int half = j->half, element = half ? 2 : 4;
    const int keyLines = (int)(NR * element / 64);
    for (long item = i0; item < i1; item++) {
        long g = item / j->spans, s = item % j->spans, k0 = s * j->spanKeys;
        long n = j->keyCount - k0 < j->spanKeys ? j->keyCount - k0 : j->spanKeys;
        // k0 is a whole number of panels: the span's keys are contiguous from its first.
        const char *keys = (const char *)j->keyPanels + key_at(g, k0, hd, j->capacity) * element;
        const char *values = (const char *)j->values + value_at(g, k0, hd, j->capacity) * element;
        long panelStep = hd * NR * element, ldk = NR * element / 4, ldv = hd * element / 4;  // bytes; floats
        float *part = j->spans > 1 ? j->partials + (g * j->spans + s) * G * (hd + 2) : NULL;
        if (scores) {
            for (long r0 = 0; r0 < G; r0 += MR) {
                long rows = G - r0 < MR ? G - r0 : MR;
                rows_kernel_fn scoresKernel = small_rows_kernel(rows, NR, half);  // the scaled queries read in place, by rows
                for (long p = 0; p * NR < n; p++)
                    scoresKernel(hd, j->q + (g * G + r0) * hd, hd, (const float *)(keys + p * panelStep), ldk, scores + p * NR, ldS,
                                 rows, n - p * NR < NR ? n - p * NR : NR, keyLines);
                float sums[MR], maxes[MR];
                chk_exp_rows(scores, rows, n, ldS, sums, maxes);
                for (long i = rows; i < kernel_height(rows); i++) memset(scores + i * ldS, 0, sizeof(float) * (size_t)n);
                float *o = j->spans == 1 ? j->out + (g * G + r0) * hd : part + r0 * hd;
                // P · V with P read in place, by rows: 64 value columns at a time where a kernel has
                // the rows, then blocks of 32 (the first block of each row fetches the rest of it).
                long c = 0;
                wide_rows_kernel_fn wide = wide_rows_kernel(rows, half);
                for (; wide && c + 64 <= hd; c += 64) wide(n, scores, ldS, (const float *)(values + c * element), ldv, o + c, hd, rows, 1);
                for (long c0 = c; c < hd; c += NR)
                    small_rows_kernel(rows, hd - c, half)(n, scores, ldS, (const float *)(values + c * element), ldv, o + c, hd, rows,
                                                          hd - c < NR ? hd - c : NR, c == c0 ? (int)(((hd - c0) * element + 63) / 64) : 0);
                for (long i = 0; i < rows; i++) {
                    if (j->spans == 1) { scale_row(o + i * hd, hd, 1 / sums[i]); continue; }
                    part[G * hd + r0 + i] = maxes[i];
                    part[G * hd + G + r0 + i] = sums[i];
                }
            }
        }
        if (j->spans > 1 && atomic_fetch_add_explicit(&j->spansDone[g], 1, memory_order_acq_rel) == j->spans - 1
            && !atomic_load(&j->failed))
            decode_combine(j, g);
    }
}

// Keys of each span of a decoded token's attention (chk_attention_cached): see there.
static long decode_span_keys(long keyCount, long kvHeads, long headDim, int threads) {
    long spans = (8L * threads + kvHeads - 1) / kvHeads, most = keyCount / 64 > 1 ? keyCount / 64 : 1;
    long largest = (1L << 16) / headDim / NR * NR, fewest = (keyCount + largest - 1) / (largest > NR ? largest : NR);
    if (spans > most) spans = most;
    if (spans < fewest) spans = fewest;
    return ((keyCount + spans - 1) / spans + NR - 1) / NR * NR;
}

int chk_attention_hint(const void *keyPanels, const void *values, long capacity, long keyCount, long kvHeads, long headDim,
                       int half, int threads, int t, long most, chk_byte_span *spans) {
    if (keyCount <= 0 || kvHeads <= 0 || capacity % NR || t < 1 || t >= threads) return 0;
    long spanKeys = decode_span_keys(keyCount, kvHeads, headDim, threads), perHead = (keyCount + spanKeys - 1) / spanKeys;
    long items = kvHeads * perHead, element = half ? 2 : 4;
    int n = 0;
    // Worker t's own items start at t·items/threads (chk_parallel_for_ranges, chunks of one item).
    for (long item = t * items / threads, budget = most; item < (t + 1) * items / threads && budget > 0 && n + 2 <= CHK_HINT_SPANS; item++) {
        long g = item / perHead, k0 = item % perHead * spanKeys, keys = keyCount - k0 < spanKeys ? keyCount - k0 : spanKeys;
        long keyBytes = (keys + NR - 1) / NR * NR * headDim * element, valueBytes = keys * headDim * element;
        spans[n++] = (chk_byte_span){(const char *)keyPanels + key_at(g, k0, headDim, capacity) * element, keyBytes};
        spans[n++] = (chk_byte_span){(const char *)values + value_at(g, k0, headDim, capacity) * element, valueBytes};
        budget -= keyBytes + valueBytes;
    }
    return n;
}

void chk_prefetch_attention(const void *keyPanels, const void *values, long capacity, long keyCount, long kvHeads,
                            long headDim, int half, int threads, long most) {
    // The spans are those of the AVX-512 decode path; without it heads are shared out otherwise.
    int T = chk_attention_available() ? pool_hint_threads(threads) : 1;
    for (int t = 1; t < T; t++) {
        chk_byte_span spans[CHK_HINT_SPANS];
        pool_hint(t, spans, chk_attention_hint(keyPanels, values, capacity, keyCount, kvHeads, headDim, half, T, t, most, spans));
    }
    if (T > 1) pool_hint_post();
}

int chk_attention_cached(const float *q, long ldq, long tokens, int half, const void *keyPanels, const void *values, long capacity,
                         long keyCount, long heads, long kvHeads, long headDim, float scale, long causalOffset,
                         float *out, long ldo, int threads) {
    if (kvHeads <= 0 || heads % kvHeads || capacity % NR) return 0;
    if (tokens <= 0) return 1;
    long group = heads / kvHeads, headStride = capacity * headDim;
    chk_kv_view kv = {keyPanels, 0, headStride, 1, values, headDim, headStride, half};
    int decode = tokens == 1 && keyCount > 0 && (causalOffset < 0 || causalOffset + 1 >= keyCount) && ldq == heads * headDim && ldo == ldq;
    // A float16 cache is read here only by a decoded token (with AVX-512 by the kernels' float16
    // variants; without, each panel line and value row widened just before use); for a prompt the
    // caller widens the cache into a float32 one (chk_kv_widen) and calls again.
    if (half && !decode) return 0;
    if (!chk_attention_available()) {
        // Without AVX-512 a decoded token reads the panels in place (a KV head's query heads
        // together, on the AVX2 or portable kernels); a prompt is left to the caller, which copies
        // the cache into rows once for the whole prompt.
        if (!decode) return 0;
        chk_attend_view(q, &kv, keyCount, heads, kvHeads, headDim, scale, out, threads);
        return 1;
    }
    if (half && headDim % 2) return 0;  // the AVX-512 float16 kernels' strides count floats: an even headDim
    if (decode) {
        // A decoded token: the query heads of a KV head are rows of one block (their q and out are
        // side by side), so each cached key and value is read once per group, not once per query
        // head; its keys are cut into spans of at least 64 so that there are about eight items
        // per thread (with four, the thread that started later — by a few microseconds — often
        // finished a whole item after the other: the caller waited 12 µs a call on average in
        // TinyLlama decode, 4 µs with eight), and of at most what stays in half of a 2 MiB L2
        // (keys and values of 1024 positions of a 64-wide head), since a span's values are read
        // once per 64 or 32 columns (and its keys once per 12 query heads of a group): the later
        // reads find them in L2.
        long spanKeys = decode_span_keys(keyCount, kvHeads, headDim, threads), spans = (keyCount + spanKeys - 1) / spanKeys;
        float *partials = spans > 1 ? chk_scratch(7, spans * kvHeads * group * (headDim + 2)) : NULL;
        _Atomic long done[kvHeads];
        for (long g = 0; g < kvHeads; g++) atomic_init(&done[g], 0);
        if (spans > 1 && !partials) return 0;
        // The queries times the scale, once (each span used to pack and scale its group's), and
        // MR rows of zeros after them: the kernels also read the rows past a short last block.
        float *scaled = chk_scratch(10, (heads + MR) * headDim);
        if (!scaled) return 0;
        for (long i = 0; i < heads * headDim; i++) scaled[i] = q[i] * scale;
        memset(scaled + heads * headDim, 0, sizeof(float) * (size_t)(MR * headDim));
        decode_job job = {scaled, keyPanels, values, capacity, half, keyCount, kvHeads, group, headDim, spans, spanKeys,
                          out, partials, done, 0};
        // Each thread its own run of items (a head's consecutive spans), the rest stolen: paired
        // runs +3-5 % a layer at 840 positions, +9 % at 200, the same at 2000 (Scripts/kernel-ab).
        chk_parallel_for_ranges(kvHeads * spans, 1, threads, decode_task, &job);
        return !atomic_load(&job.failed);
    }
    attention_job job = {q, ldq, headDim, kv, tokens, keyCount, heads, kvHeads, headDim, 1, scale, causalOffset,
                         out, ldo, headDim, 0};
    return run_attention(&job, threads);
}
