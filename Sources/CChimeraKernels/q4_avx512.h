// The q4_0 and q6_0 decode kernels with AVX-512 and VNNI (see kernels.c's "Quantized rows with VNNI"),
// included by kernels.c once per way of unpacking the high nibbles: Q4_NAME(x) names this copy's
// functions, Q4_TARGET is their target attribute and Q4_HIGH_NIBBLES(v) the high nibble of each
// byte of v. Nothing else differs between the copies; a header rather than a macro keeps the
// kernel readable.

// Four q4_0 blocks (64 bytes) unpacked for the dot products: their low nibbles (elements 0-15 of
// each block) and high nibbles (16-31).
Q4_TARGET static inline void Q4_NAME(q4_four_unpack)(const uint8_t *w, __m512i *lo, __m512i *hi) {
    const __m512i nibble = _mm512_set1_epi8(15);
    __m512i v = _mm512_loadu_si512(w);
    *lo = _mm512_and_si512(v, nibble);
    *hi = Q4_HIGH_NIBBLES(v);
}

// Four q6_0 blocks (two pairs, 96 bytes, see q6_blocks.h) unpacked as q4_four_unpack unpacks four
// q4_0 blocks: the codes (0...63) as the unsigned operand. The nibbles are each pair's first 32
// bytes; its last 16 hold the top two bits, copied so that 128-bit lane l has block l's pair's and
// moved to bits 4-5 by one shift per 64-bit element, as q6_pair_dot does (A_j's bits 0-1 and B_j's
// 2-3 left by 4 and 2 for elements 0-15, A_{j+16}'s 4-5 and B_{j+16}'s 6-7 right by 0 and 2 for 16-31).
Q4_TARGET static inline void Q4_NAME(q6_four_unpack)(const uint8_t *w, __m512i *lo, __m512i *hi) {
    const __m512i nibble = _mm512_set1_epi8(15), topBits = _mm512_set1_epi8(0x30);
    __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)w)),
                                   _mm256_loadu_si256((const __m256i *)(w + 48)), 1);
    __m512i top = _mm512_inserti32x4(_mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(w + 32))),
                                     _mm_loadu_si128((const __m128i *)(w + 80)), 1);
    top = _mm512_shuffle_i64x2(top, top, 0x50);  // 128-bit lanes: first pair's, first's, second's, second's
    *lo = _mm512_or_si512(_mm512_and_si512(v, nibble),
                          _mm512_and_si512(_mm512_sllv_epi64(top, _mm512_set_epi64(2, 2, 4, 4, 2, 2, 4, 4)), topBits));
    *hi = _mm512_or_si512(Q4_HIGH_NIBBLES(v),
                          _mm512_and_si512(_mm512_srlv_epi64(top, _mm512_set_epi64(2, 2, 0, 0, 2, 2, 0, 0)), topBits));
}

// Four blocks of q4_0 or q6_0 (`six`) unpacked.
Q4_TARGET static inline void Q4_NAME(nibbles_four_unpack)(const int six, const uint8_t *w, __m512i *lo, __m512i *hi) {
    if (six) Q4_NAME(q6_four_unpack)(w, lo, hi);
    else Q4_NAME(q4_four_unpack)(w, lo, hi);
}

// Unpacked q4_0 or q6_0 (`six`) blocks against the prepared activation's `four`-th four: lane l
// holds the integer dot product of block l/4's bytes 4(l%4)..+3, low and high nibbles, the
// correction included (q6_0's codes start from −32·Σx: 4·c4).
Q4_TARGET static inline __m512i Q4_NAME(nibbles_four_dot)(const int six, __m512i lo, __m512i hi, const chk_qx *qx, long four) {
    __m512i c = _mm512_loadu_si512(qx->c4 + four * 16);
    __m512i d = _mm512_dpbusd_epi32(six ? _mm512_slli_epi32(c, 2) : c, lo, _mm512_loadu_si512(qx->x4 + four * 128));
    return _mm512_dpbusd_epi32(d, hi, _mm512_loadu_si512(qx->x4 + four * 128 + 64));
}

// NR rows (1..4) × cols of q4_0 or q6_0 (`six`; both constants after inlining) against NT (1..4)
// prepared activations (x4 and c4 per four blocks), row r + j's product with token t into
// y[t·ldy + r + j]. Each four blocks of a row are unpacked once for all the tokens; each token's
// sums take the same steps as with NT = 1, so its results do not depend on NT.
Q4_TARGET static inline __attribute__((always_inline)) void Q4_NAME(rows_nibbles_avx512)(
    const int six, const uint8_t *q, const uint16_t *scales, const chk_qx *qx, float *y, long ldy, long cols, long r, const int NR,
    const int NT) {
    const long blocks = cols / CHK_BLOCK, blockBytes = six ? Q6_BLOCK_BYTES : 16, rowBytes = blocks * blockBytes;
    const uint8_t *row[4]; const uint16_t *sc[4];
    __m512 acc[4][4];
    for (int j = 0; j < NR; j++) {
        row[j] = q + (r + j) * rowBytes; sc[j] = scales + (r + j) * blocks;
        for (int t = 0; t < NT; t++) acc[j][t] = _mm512_setzero_ps();
    }
    // Lane → block of four (lanes 4i..4i+3 hold block i); + 4 for the second four of eight.
    const __m512i l0 = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0), l1 = _mm512_add_epi32(l0, _mm512_set1_epi32(4));
    const long far = (far_groups(NR * (rowBytes + blocks * 2)) - 1) * NR, farBytes = (far + NR) * rowBytes, farScales = far * blocks * 2;
    long b = 0;
    for (; b + 8 <= blocks; b += 8) {  // eight blocks: two fours
        for (int j = 0; j < NR; j++) {
            // the step's lines: q4_0 128 bytes, q6_0 192
            PREFETCH_STREAM(row[j], b * blockBytes, rowBytes, (NR - 1) * rowBytes, farBytes);
            PREFETCH_STREAM(row[j], b * blockBytes + 64, rowBytes, (NR - 1) * rowBytes, farBytes);
            if (six) PREFETCH_STREAM(row[j], b * blockBytes + 128, rowBytes, (NR - 1) * rowBytes, farBytes);
            PREFETCH_NEAR_FAR(sc[j] + b + NR * blocks, farScales);
            __m256 wscale = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc[j] + b)));
            __m512 s[4];
            for (int t = 0; t < NT; t++) s[t] = _mm512_castps256_ps512(_mm256_mul_ps(wscale, _mm256_loadu_ps(qx[t].xs + b)));
            for (int k = 0; k < 2; k++) {
                const long four = b / 4 + k;
                __m512i lo, hi;
                Q4_NAME(nibbles_four_unpack)(six, row[j] + four * 4 * blockBytes, &lo, &hi);
                for (int t = 0; t < NT; t++) {
                    __m512i d = Q4_NAME(nibbles_four_dot)(six, lo, hi, &qx[t], four);
                    acc[j][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_permutexvar_ps(k ? l1 : l0, s[t]), acc[j][t]);
                }
            }
        }
    }
    if (b + 4 <= blocks) {  // a last four (its lines prefetched too: Qwen2's 896 columns end in one)
        const long four = b / 4;
        for (int j = 0; j < NR; j++) {
            PREFETCH_STREAM(row[j], b * blockBytes, rowBytes, (NR - 1) * rowBytes, farBytes);
            if (six) PREFETCH_STREAM(row[j], b * blockBytes + 64, rowBytes, (NR - 1) * rowBytes, farBytes);
            PREFETCH_NEAR_FAR(sc[j] + b + NR * blocks, farScales);
            __m128 wscale = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(sc[j] + b)));
            __m512i lo, hi;
            Q4_NAME(nibbles_four_unpack)(six, row[j] + four * 4 * blockBytes, &lo, &hi);
            for (int t = 0; t < NT; t++) {
                __m512 s = _mm512_castps128_ps512(_mm_mul_ps(wscale, _mm_loadu_ps(qx[t].xs + b)));
                __m512i d = Q4_NAME(nibbles_four_dot)(six, lo, hi, &qx[t], four);
                acc[j][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_permutexvar_ps(l0, s), acc[j][t]);
            }
        }
        b += 4;
    }
    for (int j = 0; j < NR; j++)
        for (int t = 0; t < NT; t++) {
            float s = _mm512_reduce_add_ps(acc[j][t]);
            for (long i = b; i < blocks; i++)
                s += (float)(six ? block_q6(row[j], blocks, i, qx[t].xq + i * 32) : block_q4(row[j] + i * 16, qx[t].xq + i * 32))
                     * _cvtsh_ss(sc[j][i]) * qx[t].xs[i];
            y[t * ldy + r + j] = s;
        }
}

Q4_TARGET static inline __attribute__((always_inline)) void Q4_NAME(rows_q4_avx512)(
    const uint8_t *q, const uint16_t *scales, const chk_qx *qx, float *y, long ldy, long cols, long r, const int NR, const int NT) {
    Q4_NAME(rows_nibbles_avx512)(0, q, scales, qx, y, ldy, cols, r, NR, NT);
}
Q4_TARGET static inline __attribute__((always_inline)) void Q4_NAME(rows_q6_avx512)(
    const uint8_t *q, const uint16_t *scales, const chk_qx *qx, float *y, long ldy, long cols, long r, const int NR, const int NT) {
    Q4_NAME(rows_nibbles_avx512)(1, q, scales, qx, y, ldy, cols, r, NR, NT);
}

GEMVQ_BY_FOURS(Q4_TARGET, Q4_NAME(gemv_q4_avx512), uint8_t, Q4_NAME(rows_q4_avx512))
GEMVQ_BY_FOURS(Q4_TARGET, Q4_NAME(gemv_q6_avx512), uint8_t, Q4_NAME(rows_q6_avx512))
GEMVQ_TOKENS(Q4_TARGET, Q4_NAME(gemv_q4_tokens_avx512), uint8_t, Q4_NAME(rows_q4_avx512))
GEMVQ_TOKENS(Q4_TARGET, Q4_NAME(gemv_q6_tokens_avx512), uint8_t, Q4_NAME(rows_q6_avx512))
