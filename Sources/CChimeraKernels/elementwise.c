// Element-wise kernels (elementwise.h) with run-time CPU dispatch, as in kernels.c: the SIMD bodies
// live once in elementwise_simd.h and are compiled here for AVX-512 and AVX2 through target
// attributes; the portable versions below are plain C over libm.
#include "elementwise.h"
#include "weights_avx512.h"  // first_lanes
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define AVX512_ATTR __attribute__((target("avx512f,avx512dq,avx2,fma")))
#define AVX2_ATTR __attribute__((target("avx2,fma")))

// MARK: - Portable

static float act_portable(float v, int kind) {
    switch (kind) {
    case CHK_ACT_GELU: return 0.5f * v * (1 + erff(v * 0.70710678118654752f));
    case CHK_ACT_GELU_TANH: return 0.5f * v * (1 + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    case CHK_ACT_QUICK_GELU: return v / (1 + expf(-1.702f * v));
    case CHK_ACT_SILU: return v / (1 + expf(-v));
    default: return v > 0 ? v : 0;
    }
}

static void activate_rows_portable(float *x, const float *bias, long rows, long cols, int kind) {
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < cols; i++) {
            float *v = x + r * cols + i;
            *v = act_portable(bias ? *v + bias[i] : *v, kind);
        }
}

static void gated_rows_portable(const float *gate, const float *up, float *out, long rows, long cols, int kind) {
    for (long i = 0, n = rows * cols; i < n; i++) out[i] = act_portable(gate[i], kind) * up[i];
}

static void softmax_rows_portable(float *p, long rows, long cols, long ld, float *sums, float *maxes) {
    for (long r = 0; r < rows; r++) {
        float *row = p + r * ld, m = -INFINITY, sum = 0;
        for (long i = 0; i < cols; i++) m = row[i] > m ? row[i] : m;
        if (maxes) maxes[r] = m;
        for (long i = 0; i < cols; i++) { row[i] = expf(row[i] - m); sum += row[i]; }
        if (sums) { sums[r] = sum; continue; }
        float inv = 1 / sum;
        for (long i = 0; i < cols; i++) row[i] *= inv;
    }
}

static float exp_shifted_portable(const float *x, long n, float shift, float scale, float *out) {
    float sum = 0;
    for (long i = 0; i < n; i++) { out[i] = expf((x[i] - shift) * scale); sum += out[i]; }
    return sum;
}

static float tally_at_least_portable(const float *x, long n, float floor, long *count) {
    float mass = 0;
    long c = 0;
    for (long i = 0; i < n; i++)
        if (x[i] >= floor) { mass += x[i]; c++; }
    *count = c;
    return mass;
}

// The values in [lo, hi) in order (and their indices when ids is not NULL).
static long gather_range_portable(const float *x, long n, float lo, float hi, float *values, int32_t *ids) {
    long m = 0;
    for (long i = 0; i < n; i++)
        if (x[i] >= lo && x[i] < hi) {
            values[m] = x[i];
            if (ids) ids[m] = (int32_t)i;
            m++;
        }
    return m;
}

// The k-th largest of buf[0 ..< n] (1 ≤ k ≤ n), reordering buf: quickselect, Hoare partitions
// around a middle value.
static float kth_largest(float *buf, long n, long k) {
    long lo = 0, hi = n - 1, target = k - 1;  // the answer is at `target` once buf is sorted descending
    while (lo < hi) {
        float pivot = buf[lo + (hi - lo) / 2];
        long i = lo, j = hi;
        while (i <= j) {
            while (buf[i] > pivot) i++;
            while (buf[j] < pivot) j--;
            if (i <= j) { float t = buf[i]; buf[i] = buf[j]; buf[j] = t; i++; j--; }
        }
        if (target <= j) hi = j;
        else if (target >= i) lo = i;
        else return buf[target];
    }
    return buf[target];
}

// Top-k's floor in one pass: `buffer` keeps every value above a floor that at least k of the
// values seen so far reach (-inf at first); when it holds `room` of them, the floor rises to their
// k-th largest and the buffer keeps only those above it (fewer than k). APPEND_ALL is the loop
// that appends the values above the floor (a vector at a time with AVX-512) and ends each step
// with TOP_K_RAISE.
#define TOP_K_FLOOR_BODY(APPEND_ALL)                                                                  \
    long room = 4 * k > 1024 ? 4 * k : 1024, held = 0;                                               \
    float floor = -INFINITY;                                                                          \
    APPEND_ALL                                                                                        \
    if (held >= k) floor = kth_largest(buffer, held, k);                                              \
    return floor;
#define TOP_K_RAISE                                                                                   \
    if (held >= room) {                                                                               \
        floor = kth_largest(buffer, held, k);                                                         \
        long kept = 0;                                                                                \
        for (long b = 0; b < held; b++) if (buffer[b] > floor) buffer[kept++] = buffer[b];           \
        held = kept;                                                                                  \
    }

static float top_k_floor_portable(const float *x, long n, long k, float *buffer) {
    TOP_K_FLOOR_BODY(for (long i = 0; i < n; i++) {
        if (x[i] > floor) buffer[held++] = x[i];
        TOP_K_RAISE
    })
}

static void rope_rows_portable(float *x, long tokens, long heads, long headDim, long rotaryDim, const float *angles) {
    #pragma clang fp contract(off)  // each product rounded, as the SIMD versions (and Swift) do
    long half = rotaryDim / 2;
    for (long t = 0; t < tokens; t++) {
        const float *cosines = angles + t * rotaryDim, *sines = cosines + half;
        for (long h = 0; h < heads; h++) {
            float *v = x + (t * heads + h) * headDim;
            for (long i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cosines[i] - b * sines[i];
                v[i + half] = b * cosines[i] + a * sines[i];
            }
        }
    }
}

// As the SIMD ones: the first largest, the first NaN before any number.
static long argmax_portable(const float *x, long n) {
    long best = 0;
    for (long i = 0; i < n; i++) {
        if (x[i] != x[i]) return i;
        if (x[i] > x[best]) best = i;
    }
    return best;
}

static void normalize_row_portable(const float *x, float *out, long n, const float *w, const float *b, float eps) {
    float mean = 0, variance = 0;
    for (long i = 0; i < n; i++) mean += x[i];
    mean /= (float)n;
    for (long i = 0; i < n; i++) { float d = x[i] - mean; variance += d * d; }
    float inv = 1 / sqrtf(variance / (float)n + eps);
    for (long i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * w[i] + (b ? b[i] : 0);
}

static void layernorm_rows_portable(const float *x, float *out, long rows, long n, const float *w, const float *b, float eps) {
    for (long r = 0; r < rows; r++) normalize_row_portable(x + r * n, out + r * n, n, w, b, eps);
}

static void rmsnorm_rows_portable(const float *x, float *out, long rows, long n, const float *w, float offset, float eps) {
    for (long r = 0; r < rows; r++) {
        const float *row = x + r * n;
        float squares = 0;
        for (long i = 0; i < n; i++) squares += row[i] * row[i];
        float inv = 1 / sqrtf(squares / (float)n + eps);
        for (long i = 0; i < n; i++) out[r * n + i] = row[i] * inv * (offset + w[i]);
    }
}

static void residual_layernorm_rows_portable(float *h, const float *delta, const float *bias, long rows, long n,
                                             const float *w, const float *nb, float eps, float *out) {
    for (long r = 0; r < rows; r++) {
        float *row = h + r * n;
        for (long i = 0; i < n; i++) { row[i] += delta[r * n + i]; if (bias) row[i] += bias[i]; }
        if (out) normalize_row_portable(row, out + r * n, n, w, nb, eps);
    }
}

// MARK: - AVX-512

// Outside [-103.9, 88.7] exp is 0 (below the smallest denormal) or clamped; scalef applies 2^k
// with no overflow of the exponent field.
#define EXP_LO -103.9f
#define EXP_HI 88.7f
#define VROUND(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VPOW2MUL(y, k) _mm512_scalef_ps(y, k)
#define VZERO_BELOW(x, lo, y) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(lo), _CMP_GE_OQ), y)
#define V __m512
#define W 16
#define ATTR AVX512_ATTR
#define F(name) name##_avx512
#define VSET _mm512_set1_ps
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VMUL _mm512_mul_ps
#define VDIV _mm512_div_ps
#define VFMA _mm512_fmadd_ps
#define VMAX _mm512_max_ps
#define VMIN _mm512_min_ps
#define VABS(x) _mm512_abs_ps(x)
#define VNEG(x) _mm512_sub_ps(_mm512_setzero_ps(), x)
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VLOADN(p, n, fill) _mm512_mask_loadu_ps(_mm512_set1_ps(fill), first_lanes(n), p)
#define VSTOREN(p, v, n) _mm512_mask_storeu_ps(p, first_lanes(n), v)
#define VHSUM _mm512_reduce_add_ps
#define VHMAX _mm512_reduce_max_ps
#define VSELECT_NEG(x, a, b) _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), b, a)
#include "elementwise_simd.h"
#undef V
#undef W
#undef ATTR
#undef F
#undef VSET
#undef VADD
#undef VSUB
#undef VMUL
#undef VDIV
#undef VFMA
#undef VMAX
#undef VMIN
#undef VABS
#undef VNEG
#undef VLOAD
#undef VSTORE
#undef VLOADN
#undef VSTOREN
#undef VHSUM
#undef VHMAX
#undef VSELECT_NEG
#undef EXP_LO
#undef EXP_HI
#undef VROUND
#undef VPOW2MUL
#undef VZERO_BELOW

// Each vector's values in [lo, hi) packed to the front (vcompressps) and stored at the end of
// those gathered so far: a sampler's gathers take a few candidates from a whole vocabulary, or
// most of a flat one, and neither pays a branch a value.
AVX512_ATTR static long gather_range_avx512(const float *x, long n, float lo, float hi, float *values, int32_t *ids) {
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    const __m512i step = _mm512_set1_epi32(16);
    __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    long m = 0, i = 0;
    for (; i < n; i += 16, index = _mm512_add_epi32(index, step)) {
        __mmask16 valid = first_lanes(n - i);
        __m512 v = _mm512_maskz_loadu_ps(valid, x + i);
        __mmask16 in = _mm512_mask_cmp_ps_mask(_mm512_mask_cmp_ps_mask(valid, v, vlo, _CMP_GE_OQ), v, vhi, _CMP_LT_OQ);
        if (!in) continue;
        int k = __builtin_popcount(in);
        _mm512_mask_storeu_ps(values + m, first_lanes(k), _mm512_maskz_compress_ps(in, v));
        if (ids) _mm512_mask_storeu_epi32(ids + m, first_lanes(k), _mm512_maskz_compress_epi32(in, index));
        m += k;
    }
    return m;
}

AVX512_ATTR static float top_k_floor_avx512(const float *x, long n, long k, float *buffer) {
    TOP_K_FLOOR_BODY(for (long i = 0; i < n; i += 16) {
        __mmask16 valid = first_lanes(n - i);
        __m512 v = _mm512_maskz_loadu_ps(valid, x + i);
        __mmask16 in = _mm512_mask_cmp_ps_mask(valid, v, _mm512_set1_ps(floor), _CMP_GT_OQ);
        if (!in) continue;
        int m = __builtin_popcount(in);
        _mm512_mask_storeu_ps(buffer + held, first_lanes(m), _mm512_maskz_compress_ps(in, v));
        held += m;
        TOP_K_RAISE
    })
}

// MARK: - AVX2

// 2^k is built in the exponent field, so k must stay in [-126, 127]: inputs below -87.3 give 0
// (exp is below 1.2e-38 there), above 88 are clamped (no overflow to inf).
#define EXP_LO -87.3f
#define EXP_HI 88.0f
#define VROUND(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VPOW2MUL(y, k) _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23)))
#define VZERO_BELOW(x, lo, y) _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(lo), _CMP_GE_OQ), y)

AVX2_ATTR static inline __m256i tail_mask_avx2(long n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
AVX2_ATTR static inline __m256 loadn_avx2(const float *p, long n, float fill) {
    __m256i m = tail_mask_avx2(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
AVX2_ATTR static inline float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
AVX2_ATTR static inline float hmax_avx2(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

#define V __m256
#define W 8
#define ATTR AVX2_ATTR
#define F(name) name##_avx2
#define VSET _mm256_set1_ps
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VMUL _mm256_mul_ps
#define VDIV _mm256_div_ps
#define VFMA _mm256_fmadd_ps
#define VMAX _mm256_max_ps
#define VMIN _mm256_min_ps
#define VABS(x) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x)
#define VNEG(x) _mm256_xor_ps(_mm256_set1_ps(-0.0f), x)
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VLOADN loadn_avx2
#define VSTOREN(p, v, n) _mm256_maskstore_ps(p, tail_mask_avx2(n), v)
#define VHSUM hsum_avx2
#define VHMAX hmax_avx2
#define VSELECT_NEG(x, a, b) _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ))
#include "elementwise_simd.h"

// MARK: - Dispatch

typedef struct {
    const char *variant;
    void (*activate)(float *, const float *, long, long, int);
    void (*gated)(const float *, const float *, float *, long, long, int);
    void (*softmax)(float *, long, long, long, float *, float *);
    void (*layernorm)(const float *, float *, long, long, const float *, const float *, float);
    void (*rmsnorm)(const float *, float *, long, long, const float *, float, float);
    void (*residual)(float *, const float *, const float *, long, long, const float *, const float *, float, float *);
    long (*argmax)(const float *, long);
    void (*rope)(float *, long, long, long, long, const float *);
    float (*expShifted)(const float *, long, float, float, float *);
    float (*tally)(const float *, long, float, long *);
    long (*gather)(const float *, long, float, float, float *, int32_t *);
    float (*topKFloor)(const float *, long, long, float *);
} table;

static const table tables[3] = {
    {"portable", activate_rows_portable, gated_rows_portable, softmax_rows_portable, layernorm_rows_portable, rmsnorm_rows_portable, residual_layernorm_rows_portable, argmax_portable, rope_rows_portable,
     exp_shifted_portable, tally_at_least_portable, gather_range_portable, top_k_floor_portable},
    {"avx2", activate_rows_avx2, gated_rows_avx2, softmax_rows_avx2, layernorm_rows_avx2, rmsnorm_rows_avx2, residual_layernorm_rows_avx2, argmax_avx2, rope_rows_avx2,
     exp_shifted_avx2, tally_at_least_avx2, gather_range_portable, top_k_floor_portable},
    {"avx512", activate_rows_avx512, gated_rows_avx512, softmax_rows_avx512, layernorm_rows_avx512, rmsnorm_rows_avx512, residual_layernorm_rows_avx512, argmax_avx512, rope_rows_avx512,
     exp_shifted_avx512, tally_at_least_avx512, gather_range_avx512, top_k_floor_avx512},
};

static int supports(int level) {  // 2 = AVX-512, 1 = AVX2, 0 = portable
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (level == 1) return avx2;
    if (level == 2) return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    return 1;
}

// The choice for this CPU, made once (threads racing here all store the same pointer), and a
// per-thread override for tests, so that a test comparing variants never changes other threads' kernels.
static const table *chosen;
static _Thread_local const table *override;

static const table *K(void) {
    if (override) return override;
    if (!chosen) chosen = &tables[supports(2) ? 2 : supports(1) ? 1 : 0];
    return chosen;
}

const char *chk_elementwise_variant(void) { return K()->variant; }

int chk_elementwise_use(const char *name) {
    if (!name) { override = 0; return 1; }
    for (int level = 0; level < 3; level++) {
        if (!strcmp(name, tables[level].variant)) {
            if (!supports(level)) return 0;
            override = &tables[level];
            return 1;
        }
    }
    return 0;
}

void chk_activate_rows(float *x, const float *bias, long rows, long cols, int kind) { K()->activate(x, bias, rows, cols, kind); }
void chk_gated_rows(const float *gate, const float *up, float *out, long rows, long cols, int kind) {
    K()->gated(gate, up, out, rows, cols, kind);
}
void chk_softmax_rows(float *p, long rows, long cols, long ld) { K()->softmax(p, rows, cols, ld, NULL, NULL); }
void chk_exp_rows(float *p, long rows, long cols, long ld, float *sums, float *maxes) {
    K()->softmax(p, rows, cols, ld, sums, maxes);
}
void chk_layernorm_rows(const float *x, float *out, long rows, long n, const float *w, const float *b, float eps) {
    K()->layernorm(x, out, rows, n, w, b, eps);
}
void chk_rmsnorm_rows(const float *x, float *out, long rows, long n, const float *w, float offset, float eps) {
    K()->rmsnorm(x, out, rows, n, w, offset, eps);
}
void chk_residual_layernorm_rows(float *h, const float *delta, const float *bias, long rows, long n,
                                 const float *w, const float *nb, float eps, float *out) {
    K()->residual(h, delta, bias, rows, n, w, nb, eps, out);
}
long chk_argmax(const float *x, long n) { return n > 0 ? K()->argmax(x, n) : 0; }
void chk_rope_rows(float *x, long tokens, long heads, long headDim, long rotaryDim, const float *angles) {
    K()->rope(x, tokens, heads, headDim, rotaryDim, angles);
}
float chk_sampling_weights(const float *logits, long n, float max, float scale, float *weights) {
    if (n <= 0) return 0;
    return K()->expShifted(logits, n, max, scale, weights);
}
float chk_tally_at_least(const float *x, long n, float floor, long *count) {
    if (n <= 0) { *count = 0; return 0; }
    return K()->tally(x, n, floor, count);
}
long chk_gather_range(const float *x, long n, float lo, float hi, float *values, int32_t *ids) {
    return n > 0 ? K()->gather(x, n, lo, hi, values, ids) : 0;
}
float chk_top_k_floor(const float *x, long n, long k, float *buffer) {
    if (k <= 0) return INFINITY;
    return K()->topKFloor(x, n, k, buffer);
}
