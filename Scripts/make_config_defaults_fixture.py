#!/usr/bin/env python3
"""transformers' config-class defaults for the fields `chimera import` reads
(Tests/ChimeraTests/Fixtures/config_defaults.json).

Checkpoints saved by transformers 4 keep only the values that differ from their config class's
defaults (llava-hf/llava-1.5-7b-hf's text_config names no hidden_size: LlamaConfig's 4096), so the
importer fills absent fields from a table of these defaults; a Swift test compares that table with
this file. Dev-time only (transformers).

Usage: python3 Scripts/make_config_defaults_fixture.py [output_file]
"""
import inspect
import json
import sys

from transformers import (CLIPVisionConfig, GemmaConfig, LlamaConfig, PhiConfig, Qwen2Config, SiglipVisionConfig,
                          StableLmConfig)

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/ChimeraTests/Fixtures/config_defaults.json"

# Fields the importer reads, where the config class gives a value of its own (None defaults are
# derived by transformers from other fields, and tie_word_embeddings has its own precedence).
KEYS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "layer_norm_eps", "hidden_act",
        "attention_bias", "mlp_bias", "qk_layernorm", "use_qkv_bias", "use_parallel_residual", "use_sliding_window",
        "sliding_window", "image_size", "patch_size", "bos_token_id", "eos_token_id"]

out = {}
for cls in [LlamaConfig, Qwen2Config, GemmaConfig, PhiConfig, StableLmConfig, CLIPVisionConfig, SiglipVisionConfig]:
    parameters = inspect.signature(cls.__init__).parameters
    defaults = {k: parameters[k].default for k in KEYS if k in parameters and parameters[k].default is not None}
    rope = getattr(cls(), "rope_parameters", None)
    if rope:
        defaults["rope_theta"] = rope["rope_theta"]
        if "partial_rotary_factor" in rope:
            defaults["partial_rotary_factor"] = rope["partial_rotary_factor"]
    out[cls.model_type] = defaults
with open(OUT, "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)
print(json.dumps(out, sort_keys=True))
