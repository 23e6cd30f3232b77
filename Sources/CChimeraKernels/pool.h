// What the kernels' thread pool (kernels.c) offers the other kernel files.
#ifndef CHIMERA_POOL_H
#define CHIMERA_POOL_H
#include "chimera_kernels.h"

// Prefetch hints (chk_prefetch_product): while the caller works alone between two jobs, each
// waiting worker prefetches into its L2 the spans of bytes posted for it.
// The threads (caller included) the next job on `threads` threads will run on; 1: no hints.
int pool_hint_threads(int threads);
// Sets worker `worker`'s (1 ..< pool_hint_threads) spans, up to CHK_HINT_SPANS; then post them all.
void pool_hint(int worker, const chk_byte_span *spans, int count);
void pool_hint_post(void);

#endif
