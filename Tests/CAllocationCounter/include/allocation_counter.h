#ifndef CHIMERA_ALLOCATION_COUNTER_H
#define CHIMERA_ALLOCATION_COUNTER_H
#include <stddef.h>
/// Heap allocations (malloc, calloc, realloc and the aligned ones) made so far by the calling thread.
long chimera_thread_allocations(void);
#endif
