#ifndef CHIMERA_ELEMENTWISE_H
#define CHIMERA_ELEMENTWISE_H
#include <stdint.h>
// Element-wise kernels of the transformer layers (activations, softmax, layer norm, residual adds),
// with AVX-512, AVX2 and portable versions chosen once at run time, as the weight-format kernels are.
// Every kernel works on a range of rows, so callers thread them by splitting rows.
// The portable versions use libm (expf, erff, tanhf) and are the reference the SIMD ones are tested
// against; the SIMD ones use a polynomial exp (about 1 ulp) and an erf within 1.5e-7.

/// Activation kinds (the `Activation` enum of ChimeraTensor maps onto these).
enum {
    CHK_ACT_GELU = 0,       // exact: 0.5 x (1 + erf(x / sqrt 2))
    CHK_ACT_GELU_TANH = 1,  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    CHK_ACT_QUICK_GELU = 2, // x sigmoid(1.702 x)
    CHK_ACT_SILU = 3,       // x sigmoid(x)
    CHK_ACT_RELU = 4,
};

/// The variant the calling thread uses: "avx512", "avx2" or "portable".
const char *chk_elementwise_variant(void);
/// Selects the kernels by name ("avx512", "avx2", "portable") for the calling thread only (tests
/// compare them) and returns 1, or returns 0 when this CPU cannot run them; NULL restores the
/// automatic choice. Other threads (and the threaded Swift wrappers' workers) keep the automatic choice.
int chk_elementwise_use(const char *name);

/// x[r, c] = act(x[r, c] + bias[c]) for `rows` rows of `cols` floats; bias may be NULL.
void chk_activate_rows(float *x, const float *bias, long rows, long cols, int kind);

/// out = act(gate) · up element-wise over `rows` rows of `cols` floats (SwiGLU, GeGLU); out may be gate or up.
void chk_gated_rows(const float *gate, const float *up, float *out, long rows, long cols, int kind);

/// Softmax of each of `rows` rows (`cols` floats, rows `ld` floats apart) in place, max-subtracted.
/// -inf entries (masked keys) give exactly 0.
void chk_softmax_rows(float *p, long rows, long cols, long ld);
/// The same without the division: p[r, c] = exp(p[r, c] − max of row r), sums[r] = Σ_c p[r, c]
/// (attention divides its few output columns instead of every probability), and the max of each
/// row in maxes[r] unless maxes is NULL (decode attention combines spans of keys with them).
void chk_exp_rows(float *p, long rows, long cols, long ld, float *sums, float *maxes);

/// Rotary position embedding, rotate-half layout, in place: x holds `tokens` rows of `heads` heads
/// of headDim floats; in each head the first rotaryDim dimensions rotate, pair (i, i + rotaryDim/2)
/// by token t's angle i, whose cosine and sine are angles[t·rotaryDim + i] and
/// angles[t·rotaryDim + rotaryDim/2 + i] (products then sums, rounded each as unfused float math).
void chk_rope_rows(float *x, long tokens, long heads, long headDim, long rotaryDim, const float *angles);

/// Index of the first largest of n floats (greedy decoding's token), a NaN counting as larger than
/// any number (the first NaN when there is one, as torch.argmax); 0 when n is 0 or all are -inf.
long chk_argmax(const float *x, long n);

/// out[r] = LayerNorm(x[r]) · weight + bias over `n` floats (biased variance); bias may be NULL,
/// out may be x.
void chk_layernorm_rows(const float *x, float *out, long rows, long n, const float *weight, const float *bias, float eps);

/// out[r] = x[r] / sqrt(mean(x[r]²) + eps) · (offset + weight) over `n` floats (RMSNorm; offset 1
/// for Gemma, whose weights are stored as w − 1); out may be x.
void chk_rmsnorm_rows(const float *x, float *out, long rows, long n, const float *weight, float offset, float eps);

/// The residual step of a pre-norm layer: h[r] += delta[r] + bias (bias may be NULL), then, when
/// out is not NULL, out[r] = LayerNorm(h[r]) · weight + norm_bias (norm_bias may be NULL).
void chk_residual_layernorm_rows(float *h, const float *delta, const float *bias, long rows, long n,
                                 const float *weight, const float *norm_bias, float eps, float *out);
/// A sampler's weights: weights[i] = exp((logits[i] − max)·scale) (scale = 1 / temperature, max
/// the largest logit, which the caller has already found: its weight is exactly 1) over n floats;
/// returns their sum. NaN logits give NaN weights, which the tally and gather below skip. (One
/// thread: threaded over Qwen2's 151,936 logits it was no faster inside decode, where writing the
/// weights is mostly waiting for memory, and a job that found the pool's worker asleep waited
/// 35–50 µs for it to wake.)
float chk_sampling_weights(const float *logits, long n, float max, float scale, float *weights);

/// How many of the n floats at x are ≥ floor (in *count; exact below 2^24), and their sum (returned).
float chk_tally_at_least(const float *x, long n, float floor, long *count);

/// Copies the floats at x that lie in [lo, hi), in order, to values (and their indices to ids
/// unless it is NULL); returns how many. values and ids hold n.
long chk_gather_range(const float *x, long n, float lo, float hi, float *values, int32_t *ids);
/// The k-th largest of the n floats at x (NaN skipped; -inf when fewer than k are larger than
/// -inf; +inf when k ≤ 0): top-k's floor, found in one pass. `buffer` holds max(4k, 1024) + 16 floats.
float chk_top_k_floor(const float *x, long n, long k, float *buffer);
#endif
