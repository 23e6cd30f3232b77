import Foundation

/// transformers' config-class defaults (5.24) for the fields the importer reads. Checkpoints saved by
/// transformers 4 keep only the values that differ from them — llava-hf/llava-1.5-7b-hf's text_config
/// names no hidden_size (LlamaConfig's 4096), its vision_config no hidden_act (CLIP's quick_gelu) —
/// so an absent field is read as transformers reads it. Fields whose default transformers derives
/// (num_key_value_heads, a Llama head_dim) or whose precedence differs (tie_word_embeddings) are
/// not here. Scripts/make_config_defaults_fixture.py prints the table; a test compares the two.
enum ConfigDefaults {
    static let byModelType: [String: [String: any Sendable]] = [
        "clip_vision_model": ["hidden_act": "quick_gelu", "hidden_size": 768, "image_size": 224, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "num_attention_heads": 12, "num_hidden_layers": 12, "patch_size": 32],
        "gemma": ["attention_bias": false, "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 3072, "intermediate_size": 24576, "max_position_embeddings": 8192, "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 16, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "vocab_size": 256000],
        "llama": ["attention_bias": false, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 11008, "max_position_embeddings": 2048, "mlp_bias": false, "num_attention_heads": 32, "num_hidden_layers": 32, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "vocab_size": 32000],
        "phi": ["bos_token_id": 1, "eos_token_id": 2, "hidden_act": "gelu_new", "hidden_size": 2048, "intermediate_size": 8192, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "num_attention_heads": 32, "num_hidden_layers": 24, "partial_rotary_factor": 0.5, "qk_layernorm": false, "rope_theta": 10000.0, "vocab_size": 51200],
        "qwen2": ["hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 22016, "max_position_embeddings": 32768, "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "use_sliding_window": false, "vocab_size": 151936],
        "siglip_vision_model": ["hidden_act": "gelu_pytorch_tanh", "hidden_size": 768, "image_size": 224, "intermediate_size": 3072, "layer_norm_eps": 1e-06, "num_attention_heads": 12, "num_hidden_layers": 12, "patch_size": 16],
        "stablelm": ["bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 2560, "intermediate_size": 6912, "layer_norm_eps": 1e-05, "max_position_embeddings": 4096, "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "partial_rotary_factor": 0.25, "qk_layernorm": false, "rope_theta": 10000.0, "use_parallel_residual": false, "use_qkv_bias": false, "vocab_size": 50304],
    ]

    /// LlavaConfig's model types for a text_config / vision_config that names none.
    static let textModelType = "llama", visionModelType = "clip_vision_model"

    /// A section's model_type, or `fallback` when it names none.
    static func modelType(_ section: [String: Any], or fallback: String) -> String { section["model_type"] as? String ?? fallback }

    /// `config` with every absent field of its model type's defaults filled in (null stays null).
    static func filled(_ config: [String: Any], modelType: String) -> [String: Any] {
        (byModelType[modelType] ?? [:]).mapValues { $0 as Any }.merging(config) { _, given in given }
    }
}
