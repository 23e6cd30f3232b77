// Eight stored weights widened to float32 with AVX2 (+F16C), shared by the decode kernels and
// decode attention (kernels.c) and the GEMM's packing (gemm.c), as weights_avx512.h is for AVX-512.
#ifndef CHIMERA_WEIGHTS_AVX2_H
#define CHIMERA_WEIGHTS_AVX2_H
#include <immintrin.h>
#include <stdint.h>

// The target of every AVX2 kernel (kernels.c and gemm.c define none of their own).
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline __m256 f32x8(const float *p) { return _mm256_loadu_ps(p); }
AVX2 static inline __m256 f16x8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
AVX2 static inline __m256 bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
#endif
