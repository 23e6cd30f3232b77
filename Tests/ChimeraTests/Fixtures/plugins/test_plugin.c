/* A plugin written directly against chimera_plugin.h, compiled by the tests with -DMODE=... into
 * good and deliberately broken variants. Its one family, "c-scale", is a connector that doubles
 * its input (widths from the manifest). */
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "chimera_plugin.h"

#define GOOD 0
#define WRONG_ABI 1
#define NO_ENTRY 2
#define NULL_TABLE 3
#define CREATE_FAILS 4
#define WRONG_SHAPE 5
#define NON_FINITE 6
#define NO_FORWARD 7
#define FORWARD_FAILS 8
#define HUGE_PARAMETERS 9
#define DOT_NAME 10
#define HUGE_OUTPUT 11
#define FORWARD_SEGFAULTS 12
#define FORWARD_TRAPS 13
#define CREATE_ABORTS 14
#define ENTRY_SEGFAULTS 15
#define FORWARD_OVERFLOWS_STACK 16
#define CONSTRUCTOR_SEGFAULTS 17
#define CONSTRUCTOR_HANGS 18
#ifndef MODE
#define MODE GOOD
#endif

typedef struct { int64_t width; } scale_t;

static int64_t width_of(const char *json) {
    const char *p = strstr(json, "\"input_width\":");
    return p ? strtoll(p + 14, NULL, 10) : 0;
}

/* Crashes, as a buggy plugin would. */
static volatile int *nowhere;
static int64_t recurse(int64_t depth) {
    volatile char frame[512];
    frame[depth % 512] = (char)depth;
    return recurse(depth + 1) + frame[0];
}

static int32_t create(const char *manifest, const char *dir, void **handle, char **error) {
    (void)dir;
    if (MODE == CREATE_ABORTS) abort();
    if (MODE == CREATE_FAILS) { *error = strdup("the weights are not where I expected them"); return 1; }
    scale_t *s = malloc(sizeof *s);
    s->width = width_of(manifest);
    if (s->width <= 0) { free(s); *error = strdup("input_width must be a number"); return 1; }
    *handle = s;
    return 0;
}

static char *describe(void *handle) {
    char buffer[128];
    int64_t w = ((scale_t *)handle)->width;
    snprintf(buffer, sizeof buffer, "{\"input_width\": %lld, \"output_width\": %lld, \"parameters\": %s}", (long long)w, (long long)w,
             MODE == HUGE_PARAMETERS ? "1e300" : "0");
    return strdup(buffer);
}

static int32_t forward(void *handle, const chimera_tensor *inputs, int32_t count, int32_t layer, chimera_tensor *out, char **error) {
    (void)handle; (void)layer;
    if (MODE == FORWARD_FAILS) { *error = strdup("forward is unhappy"); return 2; }
    if (MODE == FORWARD_SEGFAULTS) *nowhere = 1;
    if (MODE == FORWARD_TRAPS) __builtin_trap();  /* what a Swift plugin's failed precondition does */
    if (MODE == FORWARD_OVERFLOWS_STACK) return (int32_t)recurse(0);
    if (count != 1) { *error = strdup("one input expected"); return 1; }
    int64_t n = 1;
    for (int i = 0; i < inputs[0].rank; i++) n *= inputs[0].shape[i];
    *out = inputs[0];
    if (MODE == WRONG_SHAPE) { out->shape[out->rank - 1] += 1; n = n / inputs[0].shape[inputs[0].rank - 1] * out->shape[out->rank - 1]; }
    out->data = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) out->data[i] = MODE == WRONG_SHAPE ? 0 : 2 * inputs[0].data[i];
    if (MODE == NON_FINITE) out->data[n - 1] = NAN;
    if (MODE == HUGE_OUTPUT) out->shape[0] = (int64_t)1 << 36;  /* a shape far beyond the data returned */
    return 0;
}

static void destroy(void *handle) { free(handle); }
static void release(void *pointer) { free(pointer); }

static const chimera_family families[] = {{
    .name = "c-scale", .kind = CHIMERA_KIND_CONNECTOR, .modality = NULL, .summary = "doubles its input (C test plugin)",
    .validate = NULL, .output_tokens = NULL, .create = create, .describe = describe, .prepare = NULL,
    .forward = MODE == NO_FORWARD ? NULL : forward, .parameter = NULL, .destroy = destroy,
}};

static const chimera_plugin table = {
    .abi_version = MODE == WRONG_ABI ? CHIMERA_PLUGIN_ABI_VERSION + 41 : CHIMERA_PLUGIN_ABI_VERSION,
    .name = MODE == DOT_NAME ? ".." : "c-test", .version = "1", .family_count = 1, .families = families, .free = release,
};

/* Runs as the library is loaded, inside dlopen. */
#if MODE == CONSTRUCTOR_SEGFAULTS || MODE == CONSTRUCTOR_HANGS
__attribute__((constructor)) static void on_load(void) {
    if (MODE == CONSTRUCTOR_SEGFAULTS) *nowhere = 1;
    for (volatile int forever = 1; forever;) {}
}
#endif

#if MODE != NO_ENTRY
const chimera_plugin *chimera_plugin_entry(void) {
    if (MODE == ENTRY_SEGFAULTS) *nowhere = 1;
    return MODE == NULL_TABLE ? NULL : &table;
}
#else
const chimera_plugin *some_other_symbol(void) { return &table; }
#endif
