// The SIMD element-wise kernels, written once over a few vector operations and included by
// elementwise.c for each instruction set (AVX-512, AVX2). The includer defines:
//   V (vector type), W (lanes), ATTR (target attribute), F(name) (suffixes the instruction set),
//   VSET, VADD, VSUB, VMUL, VDIV, VFMA(a, b, c) = a·b + c, VMAX, VABS, VNEG, VLOAD, VSTORE,
//   VLOADN(p, n, fill) (n < W floats, other lanes = fill), VSTOREN(p, v, n), VHSUM, VHMAX,
//   VSELECT_NEG(x, a, b) (a where x < 0, else b), VMIN, and for exp: EXP_LO, EXP_HI (the input
//   range), VROUND (to nearest), VPOW2MUL(y, k) = y·2^k, VZERO_BELOW(x, lo, y) (0 where x < lo).

// exp(x) = 2^k · e^r with k = round(x / ln 2) and r = x - k·ln 2 (ln 2 in two parts, Cephes'
// expf), |r| ≤ ln 2 / 2, e^r by Cephes' degree-6 polynomial: about 1 ulp. -inf gives exactly 0.
ATTR static inline V F(exp)(V x) {
    V clamped = VMIN(VMAX(x, VSET(EXP_LO)), VSET(EXP_HI));
    V k = VROUND(VMUL(clamped, VSET(1.44269504088896341f)));
    V r = VFMA(k, VSET(-0.693359375f), clamped);
    r = VFMA(k, VSET(2.12194440e-4f), r);
    V p = VFMA(VSET(1.9875691500e-4f), r, VSET(1.3981999507e-3f));
    p = VFMA(p, r, VSET(8.3334519073e-3f));
    p = VFMA(p, r, VSET(4.1665795894e-2f));
    p = VFMA(p, r, VSET(1.6666665459e-1f));
    p = VFMA(p, r, VSET(5.0000001201e-1f));
    V y = VADD(VFMA(VMUL(p, r), r, r), VSET(1));
    return VZERO_BELOW(x, EXP_LO, VPOW2MUL(y, k));
}

// erf from Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7): 1 - erf(|z|) = p(t)·exp(-z²),
// t = 1 / (1 + 0.3275911 |z|). Written as erfc for negative inputs so small GELU tails keep precision.
ATTR static inline V F(act)(V x, const int kind) {
    switch (kind) {
    case CHK_ACT_GELU: {
        V a = VABS(VMUL(x, VSET(0.70710678118654752f)));
        V t = VDIV(VSET(1), VFMA(VSET(0.3275911f), a, VSET(1)));
        V p = VFMA(VFMA(VFMA(VFMA(VSET(1.061405429f), t, VSET(-1.453152027f)), t, VSET(1.421413741f)), t,
                        VSET(-0.284496736f)), t, VSET(0.254829592f));
        V erfc = VMUL(VMUL(p, t), F(exp)(VMUL(VNEG(a), a)));
        V half = VMUL(VSET(0.5f), x);
        return VSELECT_NEG(x, VMUL(half, erfc), VMUL(half, VSUB(VSET(2), erfc)));
    }
    // 0.5 x (1 + tanh u) = x · sigmoid(2u): one exp, no cancellation near 0.
    case CHK_ACT_GELU_TANH: {
        V u = VMUL(VSET(0.7978845608028654f), VFMA(VMUL(VSET(0.044715f), VMUL(x, x)), x, x));
        return VDIV(x, VADD(VSET(1), F(exp)(VMUL(VSET(-2), u))));
    }
    case CHK_ACT_QUICK_GELU: return VDIV(x, VADD(VSET(1), F(exp)(VMUL(VSET(-1.702f), x))));
    case CHK_ACT_SILU: return VDIV(x, VADD(VSET(1), F(exp)(VNEG(x))));
    default: return VMAX(x, VSET(0));
    }
}

// One row with a constant kind, so that the switch above folds away in each caller below.
ATTR static inline __attribute__((always_inline)) void F(activate_row)(float *x, const float *bias, long n, const int kind) {
    long i = 0;
    for (; i + W <= n; i += W) {
        V v = VLOAD(x + i);
        if (bias) v = VADD(v, VLOAD(bias + i));
        VSTORE(x + i, F(act)(v, kind));
    }
    if (i < n) {
        V v = VLOADN(x + i, n - i, 0);
        if (bias) v = VADD(v, VLOADN(bias + i, n - i, 0));
        VSTOREN(x + i, F(act)(v, kind), n - i);
    }
}

ATTR static void F(activate_rows)(float *x, const float *bias, long rows, long cols, int kind) {
    for (long r = 0; r < rows; r++) {
        float *row = x + r * cols;
        switch (kind) {
        case CHK_ACT_GELU: F(activate_row)(row, bias, cols, CHK_ACT_GELU); break;
        case CHK_ACT_GELU_TANH: F(activate_row)(row, bias, cols, CHK_ACT_GELU_TANH); break;
        case CHK_ACT_QUICK_GELU: F(activate_row)(row, bias, cols, CHK_ACT_QUICK_GELU); break;
        case CHK_ACT_SILU: F(activate_row)(row, bias, cols, CHK_ACT_SILU); break;
        default: F(activate_row)(row, bias, cols, CHK_ACT_RELU); break;
        }
    }
}

// out = act(gate) · up, the gated MLP (SwiGLU, GeGLU), one row with a constant kind.
ATTR static inline __attribute__((always_inline)) void F(gated_row)(const float *g, const float *u, float *o, long n, const int kind) {
    long i = 0;
    for (; i + W <= n; i += W) VSTORE(o + i, VMUL(F(act)(VLOAD(g + i), kind), VLOAD(u + i)));
    if (i < n) VSTOREN(o + i, VMUL(F(act)(VLOADN(g + i, n - i, 0), kind), VLOADN(u + i, n - i, 0)), n - i);
}

ATTR static void F(gated_rows)(const float *gate, const float *up, float *out, long rows, long cols, int kind) {
    for (long r = 0; r < rows; r++) {
        const float *g = gate + r * cols, *u = up + r * cols;
        float *o = out + r * cols;
        switch (kind) {
        case CHK_ACT_GELU: F(gated_row)(g, u, o, cols, CHK_ACT_GELU); break;
        case CHK_ACT_GELU_TANH: F(gated_row)(g, u, o, cols, CHK_ACT_GELU_TANH); break;
        case CHK_ACT_QUICK_GELU: F(gated_row)(g, u, o, cols, CHK_ACT_QUICK_GELU); break;
        case CHK_ACT_SILU: F(gated_row)(g, u, o, cols, CHK_ACT_SILU); break;
        default: F(gated_row)(g, u, o, cols, CHK_ACT_RELU); break;
        }
    }
}

// Rotary embedding of every head of every token, products and sums unfused as in the portable one.
ATTR static void F(rope_rows)(float *x, long tokens, long heads, long headDim, long rotaryDim, const float *angles) {
    long half = rotaryDim / 2;
    for (long t = 0; t < tokens; t++) {
        const float *cosines = angles + t * rotaryDim, *sines = cosines + half;
        for (long h = 0; h < heads; h++) {
            float *v = x + (t * heads + h) * headDim;
            for (long i = 0; i < half; i += W) {
                long n = half - i < W ? half - i : W;
                V a = n == W ? VLOAD(v + i) : VLOADN(v + i, n, 0), b = n == W ? VLOAD(v + half + i) : VLOADN(v + half + i, n, 0);
                V c = n == W ? VLOAD(cosines + i) : VLOADN(cosines + i, n, 0), s = n == W ? VLOAD(sines + i) : VLOADN(sines + i, n, 0);
                V first = VSUB(VMUL(a, c), VMUL(b, s)), second = VADD(VMUL(b, c), VMUL(a, s));
                if (n == W) { VSTORE(v + i, first); VSTORE(v + half + i, second); }
                else { VSTOREN(v + i, first, n); VSTOREN(v + half + i, second, n); }
            }
        }
    }
}

// The largest of n floats (-inf when none is larger): softmax's shift.
ATTR static inline float F(max_of)(const float *x, long n) {
    long i = 0;
    V m = VSET(-INFINITY);
    for (; i + W <= n; i += W) m = VMAX(m, VLOAD(x + i));
    if (i < n) m = VMAX(m, VLOADN(x + i, n - i, -INFINITY));
    return VHMAX(m);
}

ATTR static void F(softmax_rows)(float *p, long rows, long cols, long ld, float *sums, float *maxes) {
    for (long r = 0; r < rows; r++) {
        float *row = p + r * ld;
        long i;
        float top = F(max_of)(row, cols);
        if (maxes) maxes[r] = top;
        V mx = VSET(top), s = VSET(0);
        for (i = 0; i + W <= cols; i += W) {
            V e = F(exp)(VSUB(VLOAD(row + i), mx));
            VSTORE(row + i, e); s = VADD(s, e);
        }
        if (i < cols) {
            V e = F(exp)(VSUB(VLOADN(row + i, cols - i, -INFINITY), mx));
            VSTOREN(row + i, e, cols - i); s = VADD(s, e);
        }
        if (sums) { sums[r] = VHSUM(s); continue; }
        V inv = VSET(1.0f / VHSUM(s));
        for (i = 0; i + W <= cols; i += W) VSTORE(row + i, VMUL(VLOAD(row + i), inv));
        if (i < cols) VSTOREN(row + i, VMUL(VLOADN(row + i, cols - i, 0), inv), cols - i);
    }
}

// The first index of the largest value, a NaN counting as larger than any number (torch.argmax's
// order): greedy decoding then picks a NaN logit and generation refuses it, where skipping it had
// depended on which operand the instruction set's max returns. The largest of each span of 256
// (vector maxima) with the span's sum beside it (not finite when a value is NaN or infinite: then
// the span is searched for a NaN), the first span that holds the overall largest, the first index
// equal to it. Two vectors a step, so that neither chain of maxima or sums waits on its latency.
ATTR static long F(argmax)(const float *x, long n) {
    enum { SPAN = 256 };
    long bestSpan = 0;
    float best = -INFINITY;
    for (long s = 0; s < n; s += SPAN) {
        long end = s + SPAN < n ? s + SPAN : n, i = s;
        V m0 = VSET(-INFINITY), m1 = m0, sum0 = VSET(0), sum1 = sum0;
        for (; i + 2 * W <= end; i += 2 * W) {
            V a = VLOAD(x + i), b = VLOAD(x + i + W);
            m0 = VMAX(m0, a); m1 = VMAX(m1, b);
            sum0 = VADD(sum0, a); sum1 = VADD(sum1, b);
        }
        if (i + W <= end) {
            V a = VLOAD(x + i);
            m0 = VMAX(m0, a); sum0 = VADD(sum0, a);
            i += W;
        }
        float top = VHMAX(VMAX(m0, m1)), sum = VHSUM(VADD(sum0, sum1));
        for (; i < end; i++) {
            sum += x[i];
            if (x[i] > top) top = x[i];
        }
        for (long j = s; sum - sum != 0 && j < end; j++)  // (NaN − NaN and inf − inf are NaN)
            if (x[j] != x[j]) return j;
        if (top > best) { best = top; bestSpan = s; }
    }
    for (long i = bestSpan; i < n; i++)
        if (x[i] == best) return i;
    return 0;  // every value -inf
}

// LayerNorm of one row whose sum is already known: variance pass, then the scaled output.
ATTR static inline void F(normalize_row)(const float *x, float *out, long n, float sum, const float *w, const float *b, float eps) {
    float mean = sum / (float)n;
    V mv = VSET(mean), q = VSET(0);
    long i = 0;
    for (; i + W <= n; i += W) { V d = VSUB(VLOAD(x + i), mv); q = VFMA(d, d, q); }
    float variance = VHSUM(q);
    for (; i < n; i++) { float d = x[i] - mean; variance += d * d; }
    V inv = VSET(1.0f / sqrtf(variance / (float)n + eps));
    for (i = 0; i + W <= n; i += W) {
        V y = VMUL(VMUL(VSUB(VLOAD(x + i), mv), inv), VLOAD(w + i));
        VSTORE(out + i, b ? VADD(y, VLOAD(b + i)) : y);
    }
    if (i < n) {
        long k = n - i;
        V y = VMUL(VMUL(VSUB(VLOADN(x + i, k, 0), mv), inv), VLOADN(w + i, k, 0));
        VSTOREN(out + i, b ? VADD(y, VLOADN(b + i, k, 0)) : y, k);
    }
}

ATTR static void F(layernorm_rows)(const float *x, float *out, long rows, long n, const float *w, const float *b, float eps) {
    for (long r = 0; r < rows; r++) {
        const float *row = x + r * n;
        V s = VSET(0);
        long i = 0;
        for (; i + W <= n; i += W) s = VADD(s, VLOAD(row + i));
        float sum = VHSUM(s);
        for (; i < n; i++) sum += row[i];
        F(normalize_row)(row, out + r * n, n, sum, w, b, eps);
    }
}

// RMSNorm: out = x / sqrt(mean(x²) + eps) · (offset + w); out may be x.
ATTR static void F(rmsnorm_rows)(const float *x, float *out, long rows, long n, const float *w, float offset, float eps) {
    for (long r = 0; r < rows; r++) {
        const float *row = x + r * n;
        float *o = out + r * n;
        V q = VSET(0);
        long i = 0;
        for (; i + W <= n; i += W) { V v = VLOAD(row + i); q = VFMA(v, v, q); }
        if (i < n) { V v = VLOADN(row + i, n - i, 0); q = VFMA(v, v, q); }
        V inv = VSET(1.0f / sqrtf(VHSUM(q) / (float)n + eps)), off = VSET(offset);
        for (i = 0; i + W <= n; i += W) VSTORE(o + i, VMUL(VMUL(VLOAD(row + i), inv), VADD(off, VLOAD(w + i))));
        if (i < n) VSTOREN(o + i, VMUL(VMUL(VLOADN(row + i, n - i, 0), inv), VADD(off, VLOADN(w + i, n - i, 0))), n - i);
    }
}

ATTR static void F(residual_layernorm_rows)(float *h, const float *delta, const float *bias, long rows, long n,
                                            const float *w, const float *nb, float eps, float *out) {
    for (long r = 0; r < rows; r++) {
        float *row = h + r * n;
        const float *d = delta + r * n;
        V s = VSET(0);
        long i = 0;
        for (; i + W <= n; i += W) {
            V v = VADD(VLOAD(row + i), VLOAD(d + i));
            if (bias) v = VADD(v, VLOAD(bias + i));
            VSTORE(row + i, v); s = VADD(s, v);
        }
        float sum = VHSUM(s);
        for (; i < n; i++) { row[i] += d[i]; if (bias) row[i] += bias[i]; sum += row[i]; }
        if (out) F(normalize_row)(row, out + r * n, n, sum, w, nb, eps);
    }
}

// out = exp((x − shift)·scale), returning the sum (chk_sampling_weights, shift the largest x).
ATTR static float F(exp_shifted)(const float *x, long n, float shift, float scale, float *out) {
    V mx = VSET(shift), sc = VSET(scale), s = VSET(0);
    long i = 0;
    for (; i + W <= n; i += W) {
        V e = F(exp)(VMUL(VSUB(VLOAD(x + i), mx), sc));
        VSTORE(out + i, e); s = VADD(s, e);
    }
    if (i < n) {
        V e = F(exp)(VMUL(VSUB(VLOADN(x + i, n - i, -INFINITY), mx), sc));
        VSTOREN(out + i, e, n - i); s = VADD(s, e);
    }
    return VHSUM(s);
}

// How many of n floats are at least `floor`, and their sum (chk_tally_at_least); counts are kept
// as floats per lane (exact below 2^24 a lane). Four vectors a step into four pairs of sums: with
// one pair, each step waited on the previous one's additions (a third of the speed).
ATTR static float F(tally_at_least)(const float *x, long n, float floor, long *count) {
    V c[4], m[4], one = VSET(1);
    for (int k = 0; k < 4; k++) c[k] = m[k] = VSET(0);
    long i = 0;
    for (; i + 4 * W <= n; i += 4 * W)
        for (int k = 0; k < 4; k++) {
            V v = VLOAD(x + i + k * W);
            m[k] = VADD(m[k], VZERO_BELOW(v, floor, v)); c[k] = VADD(c[k], VZERO_BELOW(v, floor, one));
        }
    for (; i < n; i += W) {
        V v = n - i >= W ? VLOAD(x + i) : VLOADN(x + i, n - i, -INFINITY);
        m[0] = VADD(m[0], VZERO_BELOW(v, floor, v)); c[0] = VADD(c[0], VZERO_BELOW(v, floor, one));
    }
    *count = (long)VHSUM(VADD(VADD(c[0], c[1]), VADD(c[2], c[3])));
    return VHSUM(VADD(VADD(m[0], m[1]), VADD(m[2], m[3])));
}
