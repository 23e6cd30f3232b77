// Eight stored weights widened to float32 with AVX2 (+F16C), shared by the decode kernels and
// decode attention (kernels.c) and the GEMM's packing (gemm.c), as weights_avx512.h is for AVX-512.
#ifndef CHIMERA_WEIGHTS_AVX2_H
#define CHIMERA_WEIGHTS_AVX2_H
#include <immintrin.h>
#include <stdint.h>

#define WEIGHTS_AVX2 __attribute__((target("avx2,fma,f16c")))

WEIGHTS_AVX2 static inline __m256 f32x8(const float *p) { return _mm256_loadu_ps(p); }
WEIGHTS_AVX2 static inline __m256 f16x8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
WEIGHTS_AVX2 static inline __m256 bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
#endif
