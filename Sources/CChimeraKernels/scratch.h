// Thread-local scratch buffers of the kernels (grow-only; products run on many threads in tests).
#ifndef CHIMERA_SCRATCH_H
#define CHIMERA_SCRATCH_H

// Slots: gemm.c 0-7 and 10 (see there); kernels.c 8 the quantized activation of a decode product
// and 11 its activation rounded to bfloat16 (the calling thread's, read by the workers during that
// call), 9 attention scores without AVX-512 (each thread's).
enum { CHK_SCRATCH_SLOTS = 12, CHK_SCRATCH_QX = 8, CHK_SCRATCH_SCORES = 9, CHK_SCRATCH_BF16_X = 11 };

// At least `floats` floats of this thread's slot, 64-byte aligned; NULL when memory could not be
// had. Grows to at least twice the old size, so that decode, whose key count grows by one per
// token, reallocates a handful of times in a whole generation rather than every 32 tokens.
float *chk_scratch(int slot, long floats);

#endif
