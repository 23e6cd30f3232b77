// Weight-format kernels with run-time CPU dispatch. Functions named *_avx512 / *_avx2 are compiled
// for those instruction sets through target attributes, so the rest of the package needs no
// special flags; `pick()` decides once which set this CPU runs.
#include "chimera_kernels.h"
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,fma,f16c,avx2")))
#define AVX2 __attribute__((target("avx2,fma,f16c")))

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

void chk_to_f16(const float *x, long n, uint16_t *out) { for (long i = 0; i < n; i++) out[i] = float_to_half(x[i]); }
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

static void gemv_q8_portable(const int8_t *q, const uint16_t *scales, const int8_t *xq, const float *xs,
                             float *y, long cols, long row0, long row1) {
    long blocks = cols / CHK_BLOCK;
    for (long r = row0; r < row1; r++) {
        float s = 0;
        for (long b = 0; b < blocks; b++) {
            const int8_t *wb = q + r * cols + b * CHK_BLOCK, *xb = xq + b * CHK_BLOCK;
            int32_t acc = 0;
            for (int i = 0; i < CHK_BLOCK; i++) acc += (int32_t)wb[i] * xb[i];
            s += (float)acc * half_to_float(scales[r * blocks + b]) * xs[b];
        }
        y[r] = s;
    }
}

static void gemv_q4_portable(const uint8_t *q, const uint16_t *scales, const int8_t *xq, const float *xs,
                             float *y, long cols, long row0, long row1) {
    long blocks = cols / CHK_BLOCK;
    for (long r = row0; r < row1; r++) {
        float s = 0;
        for (long b = 0; b < blocks; b++) {
            const uint8_t *wb = q + (r * cols + b * CHK_BLOCK) / 2;
            const int8_t *xb = xq + b * CHK_BLOCK;
            int32_t acc = 0;
            for (int j = 0; j < 16; j++) {
                acc += ((int32_t)(wb[j] & 15) - 8) * xb[j] + ((int32_t)(wb[j] >> 4) - 8) * xb[j + 16];
            }
            s += (float)acc * half_to_float(scales[r * blocks + b]) * xs[b];
        }
        y[r] = s;
    }
}

static void rows_f16_portable(const uint16_t *w, long cols, long row0, long row1, float *out) {
    for (long i = 0, n = (row1 - row0) * cols; i < n; i++) out[i] = half_to_float(w[row0 * cols + i]);
}

// MARK: - AVX2 (+FMA, F16C)

AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static inline __m256 bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

static inline float f32_to_float(float v) { return v; }
AVX2 static inline __m256 f32x8(const float *p) { return _mm256_loadu_ps(p); }
AVX2 static inline __m256 f16x8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

// One row at a time, two accumulators; LOAD8 widens 8 stored values to floats, SCALAR one.
#define GEMV_AVX2(NAME, T, LOAD8, SCALAR)                                                              \
    AVX2 static void NAME(const T *w, const float *x, float *y, long cols, long row0, long row1) {     \
        for (long r = row0; r < row1; r++) {                                                           \
            const T *row = w + r * cols;                                                               \
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                 \
            long i = 0;                                                                                \
            for (; i + 16 <= cols; i += 16) {                                                          \
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

// Signed int8 dot of 32 pairs into 8 int32 lanes: |w| (unsigned) times x with w's sign.
AVX2 static inline __m256i dot32_avx2(__m256i w, __m256i x) {
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

AVX2 static inline __m256i q4_unpack(const uint8_t *p) {
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    return _mm256_sub_epi8(_mm256_and_si256(v, _mm256_set1_epi8(15)), _mm256_set1_epi8(8));
}

AVX2 static void gemv_q8_avx2(const int8_t *q, const uint16_t *scales, const int8_t *xq, const float *xs,
                              float *y, long cols, long row0, long row1) {
    long blocks = cols / CHK_BLOCK;
    for (long r = row0; r < row1; r++) {
        __m256 acc = _mm256_setzero_ps();
        const int8_t *row = q + r * cols; const uint16_t *sc = scales + r * blocks;
        for (long b = 0; b < blocks; b++) {
            __m256i d = dot32_avx2(_mm256_loadu_si256((const __m256i *)(row + b * 32)), _mm256_loadu_si256((const __m256i *)(xq + b * 32)));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(h2f(sc[b]) * xs[b]), acc);
        }
        y[r] = hsum256(acc);
    }
}

AVX2 static void gemv_q4_avx2(const uint8_t *q, const uint16_t *scales, const int8_t *xq, const float *xs,
                              float *y, long cols, long row0, long row1) {
    long blocks = cols / CHK_BLOCK;
    for (long r = row0; r < row1; r++) {
        __m256 acc = _mm256_setzero_ps();
        const uint8_t *row = q + r * cols / 2; const uint16_t *sc = scales + r * blocks;
        for (long b = 0; b < blocks; b++) {
            __m256i d = dot32_avx2(q4_unpack(row + b * 16), _mm256_loadu_si256((const __m256i *)(xq + b * 32)));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(h2f(sc[b]) * xs[b]), acc);
        }
        y[r] = hsum256(acc);
    }
}

AVX2 static void rows_f16_avx2(const uint16_t *w, long cols, long row0, long row1, float *out) {
    long n = (row1 - row0) * cols, i = 0; const uint16_t *src = w + row0 * cols;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) out[i] = half_to_float(src[i]);
}

// MARK: - AVX-512 (F, BW, VL, VNNI)

AVX512 static inline __m512 bf16x16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

AVX512 static inline __m512 f32x16(const float *p) { return _mm512_loadu_ps(p); }
AVX512 static inline __m512 f16x16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

// Two rows at a time, so that each x load feeds two FMAs; an odd last row goes to the AVX2 kernel.
#define GEMV_AVX512(NAME, T, LOAD16, SCALAR, TAIL)                                                     \
    AVX512 static void NAME(const T *w, const float *x, float *y, long cols, long row0, long row1) {   \
        long r = row0;                                                                                 \
        for (; r + 2 <= row1; r += 2) {                                                                \
            const T *r0 = w + r * cols, *r1 = r0 + cols;                                               \
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;                                \
            long i = 0;                                                                                \
            for (; i + 32 <= cols; i += 32) {                                                          \
                __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);                  \
                a0 = _mm512_fmadd_ps(LOAD16(r0 + i), x0, a0);                                          \
                a1 = _mm512_fmadd_ps(LOAD16(r0 + i + 16), x1, a1);                                     \
                b0 = _mm512_fmadd_ps(LOAD16(r1 + i), x0, b0);                                          \
                b1 = _mm512_fmadd_ps(LOAD16(r1 + i + 16), x1, b1);                                     \
            }                                                                                          \
            float s0 = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));                                    \
            float s1 = _mm512_reduce_add_ps(_mm512_add_ps(b0, b1));                                    \
            for (; i < cols; i++) { s0 += SCALAR(r0[i]) * x[i]; s1 += SCALAR(r1[i]) * x[i]; }          \
            y[r] = s0; y[r + 1] = s1;                                                                  \
        }                                                                                              \
        if (r < row1) TAIL(w, x, y, cols, r, row1);                                                    \
    }
GEMV_AVX512(gemv_f32_avx512, float, f32x16, f32_to_float, gemv_f32_avx2)
GEMV_AVX512(gemv_f16_avx512, uint16_t, f16x16, half_to_float, gemv_f16_avx2)
GEMV_AVX512(gemv_bf16_avx512, uint16_t, bf16x16, bf16_to_float, gemv_bf16_avx2)

// Two blocks of 32 per 512-bit register: lanes 0-7 sum block b, lanes 8-15 block b+1.
AVX512 static inline __m512i dot64_vnni(__m512i w, __m512i x) {
    __mmask64 negative = _mm512_movepi8_mask(w);
    __m512i sx = _mm512_mask_sub_epi8(x, negative, _mm512_setzero_si512(), x);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w), sx);
}

AVX512 static inline __m512 pair_scale(const uint16_t *sc, const float *xs, long b) {
    __m256 lo = _mm256_set1_ps(_cvtsh_ss(sc[b]) * xs[b]), hi = _mm256_set1_ps(_cvtsh_ss(sc[b + 1]) * xs[b + 1]);
    return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
}

AVX512 static void gemv_q8_avx512(const int8_t *q, const uint16_t *scales, const int8_t *xq, const float *xs,
                                  float *y, long cols, long row0, long row1) {
    long blocks = cols / CHK_BLOCK;
    for (long r = row0; r < row1; r++) {
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        const int8_t *row = q + r * cols; const uint16_t *sc = scales + r * blocks;
        long b = 0;
        for (; b + 4 <= blocks; b += 4) {
            __m512i d0 = dot64_vnni(_mm512_loadu_si512(row + b * 32), _mm512_loadu_si512(xq + b * 32));
            __m512i d1 = dot64_vnni(_mm512_loadu_si512(row + b * 32 + 64), _mm512_loadu_si512(xq + b * 32 + 64));
            acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), pair_scale(sc, xs, b), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), pair_scale(sc, xs, b + 2), acc1);
        }
        float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        for (; b < blocks; b++) {
            const int8_t *wb = row + b * 32, *xb = xq + b * 32; int32_t a = 0;
            for (int i = 0; i < 32; i++) a += (int32_t)wb[i] * xb[i];
            s += (float)a * half_to_float(sc[b]) * xs[b];
        }
        y[r] = s;
    }
}

// 64 nibbles (two blocks) → 64 int8 in [-8, 7], in element order of the two blocks.
AVX512 static inline __m512i q4_unpack64(const uint8_t *p) {
    __m256i b = _mm256_loadu_si256((const __m256i *)p);  // block b bytes 0-15, block b+1 bytes 16-31
    __m256i lo = _mm256_and_si256(b, _mm256_set1_epi8(15)), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), _mm256_set1_epi8(15));
    // block b: lo[0..15], hi[0..15]; block b+1: lo[16..31], hi[16..31]
    __m256i first = _mm256_permute2x128_si256(lo, hi, 0x20), second = _mm256_permute2x128_si256(lo, hi, 0x31);
    __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(first), second, 1);
    return _mm512_sub_epi8(v, _mm512_set1_epi8(8));
}

AVX512 static void gemv_q4_avx512(const uint8_t *q, const uint16_t *scales, const int8_t *xq, const float *xs,
                                  float *y, long cols, long row0, long row1) {
    long blocks = cols / CHK_BLOCK;
    for (long r = row0; r < row1; r++) {
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        const uint8_t *row = q + r * cols / 2; const uint16_t *sc = scales + r * blocks;
        long b = 0;
        for (; b + 4 <= blocks; b += 4) {
            __m512i d0 = dot64_vnni(q4_unpack64(row + b * 16), _mm512_loadu_si512(xq + b * 32));
            __m512i d1 = dot64_vnni(q4_unpack64(row + b * 16 + 32), _mm512_loadu_si512(xq + b * 32 + 64));
            acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), pair_scale(sc, xs, b), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), pair_scale(sc, xs, b + 2), acc1);
        }
        float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        for (; b < blocks; b++) {
            const uint8_t *wb = row + b * 16; const int8_t *xb = xq + b * 32; int32_t a = 0;
            for (int j = 0; j < 16; j++) a += ((int32_t)(wb[j] & 15) - 8) * xb[j] + ((int32_t)(wb[j] >> 4) - 8) * xb[j + 16];
            s += (float)a * half_to_float(sc[b]) * xs[b];
        }
        y[r] = s;
    }
}

AVX512 static void rows_f16_avx512(const uint16_t *w, long cols, long row0, long row1, float *out) {
    long n = (row1 - row0) * cols, i = 0; const uint16_t *src = w + row0 * cols;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    for (; i < n; i++) out[i] = half_to_float(src[i]);
}

// MARK: - Dispatch

typedef void (*gemv16_fn)(const uint16_t *, const float *, float *, long, long, long);
typedef void (*gemv32_fn)(const float *, const float *, float *, long, long, long);
typedef void (*gemvq8_fn)(const int8_t *, const uint16_t *, const int8_t *, const float *, float *, long, long, long);
typedef void (*gemvq4_fn)(const uint8_t *, const uint16_t *, const int8_t *, const float *, float *, long, long, long);
typedef void (*rows16_fn)(const uint16_t *, long, long, long, float *);

static struct {
    int chosen; const char *variant;
    gemv32_fn f32; gemv16_fn f16, bf16; gemvq8_fn q8; gemvq4_fn q4; rows16_fn rows_f16;
} K;
static int forced_portable;

static void pick(void) {
    if (K.chosen) return;
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512dq");
    if (forced_portable) { avx2 = 0; avx512 = 0; }
    if (avx512) {
        K.variant = "avx512"; K.f32 = gemv_f32_avx512; K.f16 = gemv_f16_avx512; K.bf16 = gemv_bf16_avx512; K.q8 = gemv_q8_avx512; K.q4 = gemv_q4_avx512;
        K.rows_f16 = rows_f16_avx512;
    } else if (avx2) {
        K.variant = "avx2"; K.f32 = gemv_f32_avx2; K.f16 = gemv_f16_avx2; K.bf16 = gemv_bf16_avx2; K.q8 = gemv_q8_avx2; K.q4 = gemv_q4_avx2;
        K.rows_f16 = rows_f16_avx2;
    } else {
        K.variant = "portable"; K.f32 = gemv_f32_portable; K.f16 = gemv_f16_portable; K.bf16 = gemv_bf16_portable; K.q8 = gemv_q8_portable;
        K.q4 = gemv_q4_portable; K.rows_f16 = rows_f16_portable;
    }
    K.chosen = 1;
}

void chk_force_portable(int on) { forced_portable = on; K.chosen = 0; pick(); }
const char *chk_kernel_variant(void) { pick(); return K.variant; }

const char *chk_cpu_features(void) {
    static char buffer[256];
    __builtin_cpu_init();
    buffer[0] = 0;
    const char *names[] = {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512bf16"};
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
        }
        if (has) { if (buffer[0]) strcat(buffer, " "); strcat(buffer, names[i]); }
    }
    return buffer;
}

void chk_gemv_f32(const float *w, const float *x, float *y, long cols, long row0, long row1) { pick(); K.f32(w, x, y, cols, row0, row1); }
void chk_gemv_f16(const uint16_t *w, const float *x, float *y, long cols, long row0, long row1) { pick(); K.f16(w, x, y, cols, row0, row1); }
void chk_gemv_bf16(const uint16_t *w, const float *x, float *y, long cols, long row0, long row1) { pick(); K.bf16(w, x, y, cols, row0, row1); }
void chk_gemv_q8_0(const int8_t *q, const uint16_t *s, const int8_t *xq, const float *xs, float *y, long cols, long r0, long r1) {
    pick(); K.q8(q, s, xq, xs, y, cols, r0, r1);
}
void chk_gemv_q4_0(const uint8_t *q, const uint16_t *s, const int8_t *xq, const float *xs, float *y, long cols, long r0, long r1) {
    pick(); K.q4(q, s, xq, xs, y, cols, r0, r1);
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

// MARK: - Quantization

void chk_quantize_x(const float *x, long n, int8_t *q, float *scales) {
    for (long b = 0; b < n / CHK_BLOCK; b++) {
        const float *src = x + b * 32; float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(src[i]));
        float d = amax / 127, id = d > 0 ? 1 / d : 0;
        scales[b] = d;
        for (int i = 0; i < 32; i++) q[b * 32 + i] = (int8_t)lrintf(src[i] * id);
    }
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
            for (int i = 0; i < 32; i++) {
                long v = lrintf(src[i] * id);
                q[r * cols + b * 32 + i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
            }
        }
    }
}

void chk_quantize_q4_0(const float *x, long rows, long cols, uint8_t *q, uint16_t *scales) {
    long blocks = cols / CHK_BLOCK;
    for (long r = 0; r < rows; r++) {
        for (long b = 0; b < blocks; b++) {
            const float *src = x + r * cols + b * 32;
            // The value of largest magnitude maps to -8 exactly (ggml's Q4_0 choice: uses all 16 levels).
            float extreme = 0;
            for (int i = 0; i < 32; i++) if (fabsf(src[i]) > fabsf(extreme)) extreme = src[i];
            uint16_t h = float_to_half(extreme / -8);
            float d = half_to_float(h), id = d != 0 ? 1 / d : 0;
            scales[r * blocks + b] = h;
            uint8_t *dst = q + (r * cols + b * 32) / 2;
            for (int j = 0; j < 16; j++) {
                long lo = lrintf(src[j] * id) + 8, hi = lrintf(src[j + 16] * id) + 8;
                lo = lo < 0 ? 0 : lo > 15 ? 15 : lo; hi = hi < 0 ? 0 : hi > 15 ? 15 : hi;
                dst[j] = (uint8_t)(lo | (hi << 4));
            }
        }
    }
}

// MARK: - Decode attention

void chk_attend_one(const float *q, const float *keys, const float *values, long keyCount, long heads,
                    long kvHeads, long headDim, float scale, float *scores, float *out, long head0, long head1) {
#pragma clang fp reassociate(on)  // lets the dot products vectorize
    long group = heads / kvHeads, kvWidth = kvHeads * headDim;
    for (long h = head0; h < head1; h++) {
        const float *qh = q + h * headDim; const long kvh = h / group;
        float *s = scores, m = -INFINITY;
        for (long j = 0; j < keyCount; j++) {
            const float *k = keys + j * kvWidth + kvh * headDim; float d = 0;
            for (long i = 0; i < headDim; i++) d += qh[i] * k[i];
            s[j] = d * scale; m = fmaxf(m, s[j]);
        }
        float sum = 0;
        for (long j = 0; j < keyCount; j++) { s[j] = expf(s[j] - m); sum += s[j]; }
        float inv = 1 / sum, *o = out + h * headDim;
        for (long i = 0; i < headDim; i++) o[i] = 0;
        for (long j = 0; j < keyCount; j++) {
            const float *v = values + j * kvWidth + kvh * headDim; float p = s[j] * inv;
            for (long i = 0; i < headDim; i++) o[i] += p * v[i];
        }
    }
}
