// The q6_0 row (see chimera_kernels.h): blocks of 32 six-bit codes (weight = (code - 32) · scale),
// 24 bytes a block, stored by pairs so that the AVX2 kernel reads a pair as q4_0 reads two blocks:
//   a pair (blocks A, B), 48 bytes: bytes 0-15 A's low four bits as q4_0's nibbles (byte j: element
//   j in the low nibble, j+16 in the high), bytes 16-31 B's, and byte 32+j the top two bits of A_j
//   (bits 0-1), B_j (2-3), A_{j+16} (4-5) and B_{j+16} (6-7);
//   an odd last block, 24 bytes: bytes 0-15 its nibbles, byte 16+k the top two bits of elements k,
//   k+8, k+16, k+24 (bits 0-1, 2-3, 4-5, 6-7).
#ifndef CHIMERA_Q6_BLOCKS_H
#define CHIMERA_Q6_BLOCKS_H
#include <stdint.h>

enum { Q6_BLOCK_BYTES = 24 };

// Where element e of block b (of a row of `blocks`) keeps its low four bits (byte, shift) and its
// top two (byte, shift).
typedef struct { long low; int lowShift; long top; int topShift; } q6_place;
static inline q6_place q6_where(long blocks, long b, int e) {
    long base = b / 2 * 2 * Q6_BLOCK_BYTES;
    if (b / 2 * 2 + 1 < blocks) {  // one of a pair
        int which = (int)(b % 2);
        return (q6_place){base + 16 * which + e % 16, e < 16 ? 0 : 4, base + 32 + e % 16, 2 * which + 4 * (e / 16)};
    }
    return (q6_place){base + e % 16, e < 16 ? 0 : 4, base + 16 + e % 8, 2 * (e / 8)};
}

// The code (0...63) of element e of block b of `row`.
static inline int q6_code(const uint8_t *row, long blocks, long b, int e) {
    q6_place at = q6_where(blocks, b, e);
    return (row[at.low] >> at.lowShift & 15) | (row[at.top] >> at.topShift & 3) << 4;
}

// Elements k ..< k + count (within one block) of row r of a q6_0 matrix `cols` wide, as codes − 32,
// a code at a time — the GEMMs' packing (only a tied lm_head is q6_0 by default, and prefill
// multiplies it for one row) — and the index of their block's scale.
static inline long q6_centred_codes(const uint8_t *w, long cols, long r, long k, int count, int32_t *out) {
    long blocks = cols / 32, block = k / 32;
    const uint8_t *row = w + r * blocks * Q6_BLOCK_BYTES;
    for (int i = 0; i < count; i++) out[i] = q6_code(row, blocks, block, (int)(k % 32) + i) - 32;
    return r * blocks + block;
}

// Stores `code` as element e of block b of `row` (whose bytes start zeroed).
static inline void q6_store(uint8_t *row, long blocks, long b, int e, int code) {
    q6_place at = q6_where(blocks, b, e);
    row[at.low] |= (uint8_t)((code & 15) << at.lowShift);
    row[at.top] |= (uint8_t)((code >> 4) << at.topShift);
}

#endif
