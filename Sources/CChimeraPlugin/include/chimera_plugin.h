/* Chimera plugin ABI, version 1.
 *
 * Swift has no stable ABI on Linux, so only C types cross the boundary between the `chimera`
 * host and a plugin library: plain float buffers and UTF-8 JSON strings. A plugin exports one
 * symbol, `chimera_plugin_entry`, returning a table that lives as long as the library. The host
 * reads `abi_version` before anything else and refuses a plugin whose version differs.
 *
 * Ownership: strings and buffers a plugin returns through `out` parameters are owned by the host
 * and released with the plugin's `free`; buffers the host passes in are borrowed for the call.
 * Every fallible call returns 0 on success, or non-zero with `*error` set to a message (or NULL).
 */
#ifndef CHIMERA_PLUGIN_H
#define CHIMERA_PLUGIN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CHIMERA_PLUGIN_ABI_VERSION 1
#define CHIMERA_PLUGIN_ENTRY_SYMBOL "chimera_plugin_entry"
#define CHIMERA_TENSOR_MAX_RANK 4

/* A dense row-major float32 tensor. */
typedef struct chimera_tensor {
    float *data;
    int32_t rank;
    int64_t shape[CHIMERA_TENSOR_MAX_RANK];
} chimera_tensor;

typedef enum chimera_kind {
    CHIMERA_KIND_ENCODER = 0,
    CHIMERA_KIND_CONNECTOR = 1
} chimera_kind;

typedef struct chimera_family {
    /* Exact family name used by manifests ("sensor-patch-transformer"). */
    const char *name;
    chimera_kind kind;
    /* Encoders: the modality they read ("sensor", "audio"). NULL for connectors. */
    const char *modality;
    const char *summary;

    /* Checks a manifest without loading weights. May be NULL (no check beyond create). */
    int32_t (*validate)(const char *manifest_json, char **error);
    /* Connectors: tokens out for `input_tokens` in, from the manifest alone; -1 when refused. */
    int64_t (*output_tokens)(const char *manifest_json, int64_t input_tokens);

    /* Builds an instance from the manifest (connector widths already settled by the host) and the
     * folder that manifest's relative weight paths resolve against. */
    int32_t (*create)(const char *manifest_json, const char *weights_directory, void **handle, char **error);
    /* The instance's I/O contract as JSON:
     *   encoders:   {"hidden_states": N, "output": {"width": W, "tokens": T}, "parameters": P}
     *   connectors: {"input_width": I, "output_width": O, "parameters": P} */
    char *(*describe)(void *handle);
    /* Encoders: reads one input file into the encoder's input tensor. NULL for connectors. */
    int32_t (*prepare)(void *handle, const char *path, chimera_tensor *out, char **error);
    /* Encoders: hidden state `layer` (0 = embeddings, negative from the end) of inputs[0].
     * Connectors: inputs[0] features [N, I] -> [M, O] (layer is ignored). */
    int32_t (*forward)(void *handle, const chimera_tensor *inputs, int32_t input_count, int32_t layer,
                       chimera_tensor *out, char **error);
    /* Parameter `index` (0 ..< P) as a borrowed view valid until destroy, with its full name. */
    int32_t (*parameter)(void *handle, int64_t index, const char **name, chimera_tensor *view);
    void (*destroy)(void *handle);
} chimera_family;

typedef struct chimera_plugin {
    /* Must be CHIMERA_PLUGIN_ABI_VERSION; read first, before any other field. */
    int32_t abi_version;
    const char *name;
    const char *version;
    int32_t family_count;
    const chimera_family *families;
    /* Releases strings and tensor data the plugin returned. */
    void (*free)(void *pointer);
} chimera_plugin;

typedef const chimera_plugin *(*chimera_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif
#endif
