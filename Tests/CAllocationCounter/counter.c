// Counts the heap allocations each thread makes, so that a test can check that decoding a token
// allocates nothing. The test executable's malloc, calloc, realloc, aligned_alloc, memalign and
// posix_memalign take the place of the C library's (an executable's definitions come first for
// every library it loads) and forward to glibc's own (__libc_*), counting on the calling thread
// only: tests running in parallel on other threads do not disturb the count.
#include "allocation_counter.h"
#include <errno.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t count, size_t n);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t alignment, size_t n);

static _Thread_local long allocations;

void *malloc(size_t n) { allocations++; return __libc_malloc(n); }
void *calloc(size_t count, size_t n) { allocations++; return __libc_calloc(count, n); }
void *realloc(void *p, size_t n) { allocations++; return __libc_realloc(p, n); }
void *aligned_alloc(size_t alignment, size_t n) { allocations++; return __libc_memalign(alignment, n); }
void *memalign(size_t alignment, size_t n) { allocations++; return __libc_memalign(alignment, n); }
int posix_memalign(void **out, size_t alignment, size_t n) {
    if (alignment == 0 || alignment % sizeof(void *) || (alignment & (alignment - 1))) return EINVAL;
    allocations++;
    void *p = __libc_memalign(alignment, n);
    if (!p && n) return ENOMEM;
    *out = p;
    return 0;
}

long chimera_thread_allocations(void) { return allocations; }
