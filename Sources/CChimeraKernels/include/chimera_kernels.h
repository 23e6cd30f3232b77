#ifndef CHIMERA_KERNELS_H
#define CHIMERA_KERNELS_H
// Weight-format kernels: matrix-vector products (batch-1 decode) and row conversion to float32
// (tiles for sgemm in prefill). Each kernel has AVX-512, AVX2 and portable versions, chosen once
// at run time from the CPU's features.
//
// Block formats (the safetensors layout of `chimera quantize`):
//   q8_0: int8 [rows, cols] + float16 scales [rows, cols/32]; w = q * scale.
//   q4_0: uint8 [rows, cols/2] + float16 scales [rows, cols/32]; in each block of 32, byte j holds
//         element j in its low nibble and element j+16 in its high nibble; w = (nibble - 8) * scale.
//   q6_0: uint8 [rows, cols*3/4] + float16 scales [rows, cols/32]; six-bit codes, w = (code - 32) * scale,
//         24 bytes a block, stored by pairs of blocks: 32 bytes of both blocks' low four bits as
//         q4_0's nibbles, then 16 of their top two bits (layout in q6_blocks.h).
#include <stdint.h>

#define CHK_BLOCK 32

/// Space-separated names of the features the kernels use on this CPU ("avx512f avx512_vnni ...").
const char *chk_cpu_features(void);
/// Names of the kernel variants chosen ("avx512", "avx2" or "portable").
const char *chk_kernel_variant(void);
/// Forces the portable kernels (tests compare them against the SIMD ones); 0 restores the choice.
/// Also makes chk_gemm_nt and chk_attention decline, so that callers take their fallbacks.
void chk_force_portable(int on);
/// Forces the AVX2 kernels (and no AVX-512 anywhere), as on a CPU without AVX-512, so tests can run
/// them here; returns 0 when this CPU has no AVX2. 0 restores the choice.
int chk_force_avx2(int on);
/// Makes the AVX-512 q4_0 kernel unpack nibbles without GFNI (as on a CPU without it), so tests can
/// run both ways; 0 restores the choice. Returns whether the GFNI kernel runs when not forced off
/// (AVX-512 chosen and GFNI present).
int chk_force_no_gfni(int on);
/// Whether AVX-512 kernels may run (neither of the above is in force).
int chk_avx512_allowed(void);
/// Whether AVX2 kernels may run: this CPU has AVX2, FMA and F16C and the portable ones are not forced.
int chk_avx2_allowed(void);

/// y[r] = dot(W[r, :], x) for r in [row0, row1).
void chk_gemv_f32(const float *w, const float *x, float *y, long cols, long row0, long row1);
void chk_gemv_f16(const uint16_t *w, const float *x, float *y, long cols, long row0, long row1);
void chk_gemv_bf16(const uint16_t *w, const float *x, float *y, long cols, long row0, long row1);
/// An activation row prepared once per product for the quantized kernels: int8 blocks of 32 with
/// float scales (`xq`, `xs`), plus what the VNNI kernels read — the same bytes in q4_0's nibble
/// order (`x4`: per four blocks, elements 0-15 of each, then 16-31 of each) and per-lane corrections
/// for unsigned weights (`c8` = −128·Σ of each four bytes of `xq`; `c4` = −8·Σ of bytes 4l..4l+3 of
/// both halves of each four blocks of `x4`).
typedef struct chk_qx {
    const int8_t *xq, *x4;
    const int32_t *c8, *c4;
    const float *xs;
} chk_qx;
/// Bytes of the buffer chk_prepare_qx needs for n activations.
long chk_qx_bytes(long n);
/// Quantizes n (a multiple of 32) floats into `buffer` (chk_qx_bytes(n) bytes) and describes them.
chk_qx chk_prepare_qx(const float *x, long n, void *buffer);

/// n floats (a multiple of 32) as int8 blocks of 32 and their scales, as chk_prepare_qx makes `xq`
/// and `xs`: per block d = max|x| / 127, q = x · (1/d) rounded to nearest (ties to even).
void chk_quantize_blocks(const float *x, long n, int8_t *q, float *scales);
/// Rows [0, m) of x (k columns, a multiple of 32; rows ldx apart) rounded through that quantization:
/// out = q · d (rows ldo apart; out may be x), on up to `threads` threads. What a product of
/// quantized weights multiplies on every path, decode and prefill, with or without VNNI.
void chk_quantize_roundtrip(const float *x, long ldx, long m, long k, float *out, long ldo, int threads);
/// Rows [0, m) of x (k columns, rows ldx apart) rounded to bfloat16 (nearest even; NaN stays NaN):
/// what a product of bfloat16 weights multiplies on every path (out may be x).
void chk_bf16_roundtrip(const float *x, long ldx, long m, long k, float *out, long ldo, int threads);

/// Quantized weights against an activation prepared by chk_prepare_qx.
void chk_gemv_q8_0(const int8_t *q, const uint16_t *scales, const chk_qx *x, float *y, long cols, long row0, long row1);
void chk_gemv_q4_0(const uint8_t *q, const uint16_t *scales, const chk_qx *x, float *y, long cols, long row0, long row1);
void chk_gemv_q6_0(const uint8_t *q, const uint16_t *scales, const chk_qx *x, float *y, long cols, long row0, long row1);

/// Weight quantization of `rows` rows of `cols` (a multiple of 32) floats.
void chk_quantize_q8_0(const float *x, long rows, long cols, int8_t *q, uint16_t *scales);
void chk_quantize_q4_0(const float *x, long rows, long cols, uint8_t *q, uint16_t *scales);
void chk_quantize_q6_0(const float *x, long rows, long cols, uint8_t *q, uint16_t *scales);

/// Rows [row0, row1) widened to float32 into out (row-major, `cols` per row, starting at out[0]).
void chk_rows_f16(const uint16_t *w, long cols, long row0, long row1, float *out);
void chk_rows_bf16(const uint16_t *w, long cols, long row0, long row1, float *out);
void chk_rows_q8_0(const int8_t *q, const uint16_t *scales, long cols, long row0, long row1, float *out);
void chk_rows_q4_0(const uint8_t *q, const uint16_t *scales, long cols, long row0, long row1, float *out);
void chk_rows_q6_0(const uint8_t *q, const uint16_t *scales, long cols, long row0, long row1, float *out);

/// float32 → float16 / bfloat16 (round to nearest even), n values.
void chk_to_f16(const float *x, long n, uint16_t *out);
void chk_to_bf16(const float *x, long n, uint16_t *out);

/// Runs task(context, begin, end) over [0, n) in chunks of `chunk` on `threads` threads (the
/// caller's included): a persistent pool whose workers spin briefly between jobs, so a decoded
/// token's ~150 matrix products do not each pay a thread wake-up. A call made while the pool is busy
/// (another thread, or from inside a task) runs serially on the calling thread.
typedef void (*chk_task)(void *context, long begin, long end);
void chk_parallel_for(long n, long chunk, int threads, chk_task task, void *context);
/// The same with each thread's own contiguous share of the chunks: it claims a quarter of what is
/// left of it at a time (at least one chunk), then takes half of what is left of the fullest other
/// share, from its back. A thread's claims continue one stream of rows (a product's prefetches run
/// on into them) and touch only its own cache line until the shares run out; the threads still
/// finish close together. At most 64 threads (more are not started).
void chk_parallel_for_ranges(long n, long chunk, int threads, chk_task task, void *context);

typedef enum chk_format { CHK_F32, CHK_F16, CHK_BF16, CHK_Q8_0, CHK_Q4_0, CHK_Q6_0 } chk_format;
/// Whether `format` is one of the blocks of 32 with scales, read against a quantized activation.
static inline int chk_format_is_blocked(chk_format format) { return format == CHK_Q8_0 || format == CHK_Q4_0 || format == CHK_Q6_0; }
/// x as a product of `format` weights multiplies it (into out, rows ldo apart; out may be x): rounded
/// through int8 blocks for q8_0/q4_0/q6_0 (chk_quantize_roundtrip), to bfloat16 for bf16
/// (chk_bf16_roundtrip), as it is for f32/f16. The BLAS fallbacks multiply this.
void chk_round_activation(chk_format format, const float *x, long ldx, long m, long k, float *out, long ldo, int threads);
/// y = W x for all `rows` of W in `format` (scales for q8_0/q4_0/q6_0), on `threads` threads: the decode product.
void chk_matvec(chk_format format, const void *w, const uint16_t *scales, const float *x, float *y, long rows, long cols, int threads);

/// One matrix of chk_matvec_parts: `rows` rows in `format`, its product into y, plus `bias` (rows
/// floats) unless it is NULL.
typedef struct chk_matvec_part { chk_format format; const void *w; const uint16_t *scales; long rows; float *y; const float *bias; } chk_matvec_part;
#define CHK_MATVEC_PARTS 8
/// y_i = W_i x for several matrices of `cols` columns and the same x (q/k/v, gate/up) in one
/// threaded pass over all their rows (more than CHK_MATVEC_PARTS: one pass each).
void chk_matvec_parts(const chk_matvec_part *parts, int count, const float *x, long cols, int threads);
/// chk_matvec_parts for `tokens` activation rows (row t at x + t·ldx), its output row t at
/// y + t·rows of each part, in one pass over the weights: each token's results are exactly those
/// of chk_matvec_parts on its row alone. Up to CHK_MATVEC_TOKENS rows a pass (more: several).
void chk_matvec_rows(const chk_matvec_part *parts, int count, const float *x, long ldx, long tokens, long cols, int threads);
#define CHK_MATVEC_TOKENS 16

/// chk_argmax (elementwise.h) on up to `threads` threads, each over a contiguous share (n of at
/// least 65,536: a vocabulary): the same index for any input.
long chk_argmax_threaded(const float *x, long n, int threads);

/// Lets the pool's waiting workers prefetch into their L2 the rows each will start the next
/// chk_matvec_parts of these parts with, at most `most` bytes each, while the caller works alone
/// before it (between two products of a decoded token memory would otherwise idle). Each worker
/// prefetches the spans chk_product_hint gives it, until its next job comes.
void chk_prefetch_product(const chk_matvec_part *parts, int count, long cols, int threads, long most);
/// Bytes from `start` on (a prefetch hint's piece).
typedef struct { const void *start; long bytes; } chk_byte_span;
#define CHK_HINT_SPANS (2 * CHK_MATVEC_PARTS)
/// Where worker t (1 ..< threads) of a chk_matvec_parts on `threads` threads starts: the rows of
/// its own share's front, at most `most` bytes (rounded up to a whole row) as spans of values and
/// of scales, into spans[0 ..< CHK_HINT_SPANS]; returns how many.
int chk_product_hint(const chk_matvec_part *parts, int count, long cols, int threads, int t, long most, chk_byte_span *spans);

/// Where each KV head's keys and values are. Keys either as rows (element (t, d) of head g at
/// keys + g·keyHeadStride + t·ldk + d) or, in the KV cache, as panels of CHK_KEY_PANEL positions,
/// dimension-major (panel p of head g at keys + g·keyHeadStride + p·headDim·CHK_KEY_PANEL, element
/// (t, d) at + d·CHK_KEY_PANEL + t % CHK_KEY_PANEL): the layout the GEMM's micro-kernel reads, so
/// attention over the cache packs no keys. Values as rows: (t, d) of head g at
/// values + g·valueHeadStride + t·ldv + d.
/// `half`: keys and values hold float16 (strides in elements), for the cache's panels only.
typedef struct chk_kv_view {
    const float *keys; long ldk, keyHeadStride; int keyPanels;
    const float *values; long ldv, valueHeadStride;
    int half;
} chk_kv_view;

/// Attention of one query row per head over keyCount keys and values given as rows (decode):
/// out[h] = softmax(scale q_h·K)·V, for heads [head0, head1); scores is scratch of keyCount floats.
void chk_attend_one(const float *q, const chk_kv_view *kv, long keyCount, long heads, long kvHeads, long headDim,
                    float scale, float *scores, float *out, long head0, long head1);
/// The same for every head, threaded over heads on `threads` threads, with scratch on each thread's
/// stack; keys and values are [keyCount, kvHeads*headDim] rows.
void chk_attend(const float *q, const float *keys, const float *values, long keyCount, long heads, long kvHeads,
                long headDim, float scale, float *out, int threads);
/// The same over any view: rows one query head at a time; the KV cache's panels (decode without
/// AVX-512) with a KV head's query heads together.
void chk_attend_view(const float *q, const chk_kv_view *kv, long keyCount, long heads, long kvHeads, long headDim,
                     float scale, float *out, int threads);

/// Reads p[0 ..< floats] once on `threads` threads as fast as they come (plain loads; with AVX-512
/// also prefetched ahead into L2, which on AVX2's Zen 3 only slowed it) and returns the rate in
/// GB/s: main memory's read bandwidth when the buffer is much larger than the caches and was not
/// read just before.
double chk_read_pass(const float *p, long floats, int threads);

/// Whether chk_gemm_nt runs on this CPU (AVX-512, or AVX2 with FMA and F16C).
int chk_gemm_available(void);
/// Whether the kernels' AVX-512 attention runs on this CPU (chk_attention, chk_attention_cached,
/// chk_attend's grouped heads); without it they decline or take their AVX2/portable paths.
int chk_attention_available(void);
/// C[m, n] = X[m, k] · W[n, k]ᵀ + bias (C += … when `accumulate`) with W in `format` (scales for
/// q8_0/q4_0/q6_0), bias (n floats, added to every row) NULL or float32, and X, C float32 with row strides
/// ldx, ldc, on `threads` threads. Returns 0 (nothing guaranteed about c) without AVX-512 or AVX2, or scratch memory.
/// Quantized W (q8_0/q4_0/q6_0) multiplies X quantized in blocks of 32 as decode's products quantize
/// it (chk_quantize_roundtrip): with VNNI as int8 dot products, otherwise as floats. bf16 W multiplies
/// X rounded to bfloat16 (chk_bf16_roundtrip): on AMD's AVX-512 BF16 as bfloat16 dot products.
int chk_gemm_nt(chk_format format, const void *w, const uint16_t *scales, long n, long k, const float *bias,
                const float *x, long ldx, long m, float *c, long ldc, int accumulate, int threads);
/// One weight matrix of chk_gemm_nt_parts (with its bias or NULL) and where its product goes. The
/// product reads W's columns [wk0, wk0 + k) of rows `wcols` wide (0: k wide, wk0 0): a range of
/// columns (whole blocks of 32 when blocked) multiplies an X as wide as the range (an MLP's down
/// projection, a slice of its intermediate at a time).
typedef struct chk_gemm_part {
    chk_format format; const void *w; const uint16_t *scales; long n; const float *bias;
    float *c; long ldc; int accumulate; long wcols; long wk0;
} chk_gemm_part;
#define CHK_GEMM_PARTS 8
/// Several products of the same X (k columns, up to CHK_GEMM_PARTS parts: q/k/v, gate/up), with the
/// weight blocks of all parts shared out among the threads together. Returns 0 as chk_gemm_nt.
int chk_gemm_nt_parts(const chk_gemm_part *parts, int count, long k, const float *x, long ldx, long m, int threads);
/// Makes quantized weights' GEMMs run the float micro-kernel on the rounded activation (as on a CPU
/// without VNNI) instead of the int8 one, so tests can compare both; 0 restores the choice. Returns
/// whether the int8 product runs when not forced off.
int chk_force_float_gemm(int on);
/// Makes bf16 weights' GEMMs take the bfloat16 dot-product micro-kernel (AVX-512 BF16) on every CPU
/// that has it (1), not only where it is the faster choice (AMD's; 0 restores that choice), so tests
/// can run it on any CPU with the instruction; chk_force_float_gemm(1) forces the float
/// micro-kernel instead. Returns whether this CPU can run it.
int chk_force_bf16_gemm(int on);
/// Rows a pass of the AVX-512 decode kernels: four side by side on Intel's CPUs, one on AMD's
/// (faster from memory there). chk_force_decode_rows(1 or 4) forces it, 0 restores the choice.
int chk_decode_rows_per_pass(void);
void chk_force_decode_rows(int rows);
/// Which product bf16 weights' GEMMs take here: "bf16-dot" or "float" (bench reports it).
const char *chk_bf16_gemm_kind(void);
/// Multi-head attention of `tokens` query rows (q rows ldq apart, heads × headDim wide) over
/// `keyCount` keys and values (rows ldkv apart, kvHeads × headDim wide; grouped-query when
/// kvHeads < heads): out[t, h] = softmax(scale · q_h k_hᵀ) v_h, where with causalOffset = p ≥ 0 query
/// t sees keys 0...p+t and with −1 every key. Threaded over heads and query blocks. Returns 0 (and
/// nothing is guaranteed about out) without AVX-512 or when scratch memory could not be had.
int chk_attention(const float *q, long ldq, const float *keys, const float *values, long ldkv, long tokens,
                  long keyCount, long heads, long kvHeads, long headDim, float scale, long causalOffset,
                  float *out, long ldo, int threads);

/// The KV cache's layout, per KV head (`capacity` positions, a multiple of CHK_KEY_PANEL): keys as
/// panels of CHK_KEY_PANEL positions, dimension-major — element (t, d) of head g at
/// g·capacity·headDim + (t / CHK_KEY_PANEL)·headDim·CHK_KEY_PANEL + d·CHK_KEY_PANEL + t % CHK_KEY_PANEL,
/// the layout attention's micro-kernel reads without packing — and values as rows, (t, d) at
/// (g·capacity + t)·headDim + d.
#define CHK_KEY_PANEL 32
/// A cache may hold float16 instead of float32 (`half`), in the same layout (elements of 2 bytes).
/// Stores `tokens` rows of keys and values (ld floats apart, kvHeads × headDim wide) at positions
/// position ..< position + tokens, rounded to float16 when `half`.
void chk_kv_append(const float *k, const float *v, long ld, long tokens, long position, long kvHeads, long headDim,
                   long capacity, int half, void *keyPanels, void *values);
/// Prefetches the lines chk_kv_append of one token at `position` will write (a key is spread over
/// headDim lines of its panel), so that the append, later, does not wait for them.
void chk_kv_prefetch_append(long position, long kvHeads, long headDim, long capacity, int half, void *keyPanels, void *values);
/// The first keyCount positions of a float16 cache (keys in whole panels) as float32 in the same
/// layout, into keysOut and valuesOut (each kvHeads × capacity × headDim floats), on `threads` threads.
void chk_kv_widen(const uint16_t *keyPanels, const uint16_t *values, long keyCount, long kvHeads, long headDim,
                  long capacity, float *keysOut, float *valuesOut, int threads);
/// The first keyCount positions as rows [keyCount, kvHeads × headDim] (for the fallbacks).
void chk_kv_rows(const float *keyPanels, const float *values, long keyCount, long kvHeads, long headDim, long capacity,
                 float *keys, float *valueRows);
/// chk_attention over the KV cache: `tokens` query rows (ldq apart) over its first keyCount
/// positions. A single query row that sees every key (a decoded token) takes each group of query
/// heads as rows of one block, reading the group's keys and values once, with or without AVX-512.
/// Returns 0 as chk_attention (for several query rows without AVX-512: the caller falls back), and
/// for a float16 cache (`half`) unless it is a decoded token (the caller widens it for a prompt).
int chk_attention_cached(const float *q, long ldq, long tokens, int half, const void *keyPanels, const void *values, long capacity,
                         long keyCount, long heads, long kvHeads, long headDim, float scale, long causalOffset,
                         float *out, long ldo, int threads);
/// As chk_prefetch_product, for a decoded token's chk_attention_cached over keyCount positions:
/// each waiting worker prefetches the keys and values of the spans it will start with (with the
/// AVX-512 kernels; otherwise nothing).
void chk_prefetch_attention(const void *keyPanels, const void *values, long capacity, long keyCount, long kvHeads,
                            long headDim, int half, int threads, long most);
/// The keys and values of the spans of keys worker t starts such an attention with (its own
/// share's first items; spans of keys then of values, alternately, while `most` bytes last).
int chk_attention_hint(const void *keyPanels, const void *values, long capacity, long keyCount, long kvHeads, long headDim,
                       int half, int threads, int t, long most, chk_byte_span *spans);

#endif
