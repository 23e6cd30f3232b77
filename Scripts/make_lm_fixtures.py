#!/usr/bin/env python3
"""Tiny random language models of every supported family, and LLaVA checkpoints pairing CLIP with
Qwen2 and Gemma, with transformers' reference outputs.

Dev-time only (needs torch, transformers, tokenizers, safetensors, Pillow). Writes under
Tests/ChimeraTests/Fixtures/:
  lm-<name>/      a *ForCausalLM folder (save_pretrained, float16 weights, tokenizer.json) plus
                  reference.safetensors (float32 logits over the input ids) and reference.json
                  (input ids, greedy continuation from model.generate(do_sample=False)).
  llava-qwen2/, llava-gemma/, llava-phi/, llava-stablelm/   as make_llava_fixtures.py writes its LLaVA folders.
Weights are rounded to float16 before the references are computed in float32, so both sides see
the same numbers.
"""
import json, os, sys
import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, GemmaConfig, GemmaForCausalLM,
                          PhiConfig, PhiForCausalLM, StableLmConfig, StableLmForCausalLM)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_llava_fixtures import FIXTURES, build, compact_json, save_model, train_tokenizer, widen  # noqa: E402

VOCAB = 300
PROMPT = "The quick brown fox jumps."
STD = 0.3  # wider than make_llava_fixtures' 0.08: at width 32 that still gives varied greedy tokens


def common(tokenizer, context=128):
    return dict(vocab_size=len(tokenizer), max_position_embeddings=context, bos_token_id=1, eos_token_id=2,
                pad_token_id=tokenizer.pad_token_id)


LANGUAGE_MODELS = {
    # GQA (4 heads over 2), untied lm_head.
    "llama": (LlamaForCausalLM, lambda t: LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, **common(t))),
    # q/k/v bias, one KV head, tied embeddings, theta 1e6.
    "qwen2": (Qwen2ForCausalLM, lambda t: Qwen2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False, **common(t))),
    # explicit head_dim (16, not 32/4), one KV head, tied, GeGLU, RMSNorm (1 + w), scaled embeddings.
    "gemma": (GemmaForCausalLM, lambda t: GemmaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        head_dim=16, rope_theta=10000.0, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, **common(t))),
    # parallel attention + MLP from one LayerNorm, biases everywhere, partial rotary 0.4 (6 of 16 dims).
    "phi": (PhiForCausalLM, lambda t: PhiConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        partial_rotary_factor=0.4, rope_theta=10000.0, layer_norm_eps=1e-5, hidden_act="gelu_new",
        tie_word_embeddings=False, qk_layernorm=False, **common(t))),
    # qk_layernorm (per head), q/k/v bias, GQA, partial rotary 0.25 (4 of 16 dims), sequential residual.
    "stablelm-a": (StableLmForCausalLM, lambda t: StableLmConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        partial_rotary_factor=0.25, rope_theta=10000.0, layer_norm_eps=1e-5, use_qkv_bias=True, qk_layernorm=True,
        use_parallel_residual=False, tie_word_embeddings=False, **common(t))),
    # parallel residual, no q/k/v bias, tied embeddings.
    "stablelm-b": (StableLmForCausalLM, lambda t: StableLmConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        partial_rotary_factor=0.25, rope_theta=500.0, layer_norm_eps=1e-5, use_qkv_bias=False, qk_layernorm=False,
        use_parallel_residual=True, tie_word_embeddings=True, **common(t))),
    # Scaled rotary frequencies (rope types past "default"); each head's 4 frequencies straddle the
    # type's bands. Llama 3.1's: one kept, one blended, two divided by the factor.
    "llama-llama3": (LlamaForCausalLM, lambda t: LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=64),
        rms_norm_eps=1e-5, tie_word_embeddings=True, **common(t))),
    # YaRN as Qwen2.5 configs spell it (a legacy rope_scaling with "type", see LEGACY_ROPE_SCALING):
    # a ramp over the dimensions (theta 100: its truncated bounds, 0 and 2, differ from the exact ones)
    # and cosines and sines scaled by the attention factor.
    "qwen2-yarn": (Qwen2ForCausalLM, lambda t: Qwen2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        rope_parameters=dict(rope_type="yarn", rope_theta=100.0, factor=4.0, original_max_position_embeddings=32),
        rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False, **common(t))),
    # Linear interpolation on a partial rotary (6 of 16 dims).
    "phi-linear": (PhiForCausalLM, lambda t: PhiConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        partial_rotary_factor=0.4, rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0),
        layer_norm_eps=1e-5, hidden_act="gelu_new", tie_word_embeddings=False, qk_layernorm=False, **common(t))),
    # Dynamic NTK scaling past a 16-position original context (max_position_embeddings): the prompt
    # (PROMPTS) and the answer run past it, each pass with the base of its own length.
    "llama-dynamic": (LlamaForCausalLM, lambda t: LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=4.0), rms_norm_eps=1e-5,
        tie_word_embeddings=False, **dict(common(t), max_position_embeddings=16))),
}

# Prompts other than PROMPT.
PROMPTS = {"llama-dynamic": "The quick brown fox jumps over the lazy dog."}

# Fixtures whose config.json is rewritten to the older layout (top-level rope_theta, rope_scaling with
# "type"), as checkpoints saved before transformers 5 have it; transformers reads both the same.
LEGACY_ROPE_SCALING = {"qwen2-yarn"}


def build_lm(name, model_class, make_config, seed, max_new_tokens=10):
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(VOCAB)
    model = model_class(make_config(tokenizer)).eval()
    widen(model, STD, half=True)
    out_dir = os.path.join(FIXTURES, f"lm-{name}")
    os.makedirs(out_dir, exist_ok=True)
    save_model(model, out_dir, half=True)
    tokenizer.save_pretrained(out_dir)
    if name in LEGACY_ROPE_SCALING:
        legacy_rope_layout(model_class, out_dir)
    prompt = PROMPTS.get(name, PROMPT)
    if model.config.rope_parameters.get("rope_type", "default") != "default":
        show_scaling_matters(model, tokenizer, prompt)
    compact_json(os.path.join(out_dir, "tokenizer.json"))
    input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
        generated = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                   max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = generated[0, input_ids.shape[1]:].tolist()
    save_file({"logits": logits[0].contiguous()}, os.path.join(out_dir, "reference.safetensors"))
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump({"prompt": prompt, "input_ids": input_ids[0].tolist(), "generated": new_tokens,
                   "max_new_tokens": max_new_tokens}, f, indent=1)
    print(name, "generated", new_tokens, file=sys.stderr)


def legacy_rope_layout(model_class, out_dir):
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    parameters = config.pop("rope_parameters")
    config["rope_theta"] = parameters.pop("rope_theta")
    parameters["type"] = parameters.pop("rope_type")
    config["rope_scaling"] = parameters
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    reloaded = model_class.from_pretrained(out_dir).eval()  # reads the same rope as the saved model
    assert reloaded.config.rope_parameters["rope_type"] == parameters["type"], reloaded.config.rope_parameters


def show_scaling_matters(model, tokenizer, prompt):
    """The scaled model's logits must differ from the same weights with plain rope, or the fixture
    would not test the scaling."""
    plain_config = model.config.__class__.from_dict(model.config.to_dict())
    plain_config.rope_parameters = dict(rope_type="default", rope_theta=model.config.rope_parameters["rope_theta"],
                                        **({"partial_rotary_factor": model.config.rope_parameters["partial_rotary_factor"]}
                                           if "partial_rotary_factor" in model.config.rope_parameters else {}))
    plain = model.__class__(plain_config).eval()
    plain.load_state_dict(model.state_dict())
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        difference = (model(input_ids=ids).logits - plain(input_ids=ids).logits).abs().max().item()
    print("  scaled rope moves the logits by up to", difference, file=sys.stderr)
    assert difference > 1e-2, difference


def logits_with_scaled_features(model, inputs, projected, image_token_id):
    """LLaVA + Gemma as transformers 4.x ran it (and TinyLLaVA-Gemma trained): GemmaModel scaled all of
    inputs_embeds by sqrt(hidden), spliced image features included. transformers 5 scales token
    embeddings only, which is what model(...) above computed."""
    language_model = model.model.language_model
    ids = inputs["input_ids"]
    with torch.no_grad():
        embeds = torch.nn.functional.embedding(ids, language_model.embed_tokens.weight)
        embeds[ids == image_token_id] = projected.reshape(-1, embeds.shape[-1])
        embeds = embeds * language_model.embed_tokens.embed_scale.to(embeds.dtype)
        hidden = language_model(inputs_embeds=embeds).last_hidden_state
        return {"logits_scaled_features": model.lm_head(hidden)[0].contiguous()}


def main():
    """With names (python3 Scripts/make_lm_fixtures.py llama-llama3 ...), writes only those lm- folders."""
    only = set(sys.argv[1:])
    torch.set_default_dtype(torch.float32)
    for seed, (name, (model_class, make_config)) in enumerate(LANGUAGE_MODELS.items(), start=10):
        if not only or name in only:
            build_lm(name, model_class, make_config, seed)
    if only:
        return
    tiny_clip = dict(hidden=16, ffn=32, layers=2, heads=2)
    for name, family, seed, extra in [("llava-qwen2", "qwen2", 30, None), ("llava-gemma", "gemma", 31, logits_with_scaled_features),
                                      ("llava-phi", "phi", 32, None), ("llava-stablelm", "stablelm-a", 33, None)]:
        make_text = LANGUAGE_MODELS[family][1]
        build(name, vision=tiny_clip, image_size=16, patch=8, text=dict(tied=True, theta=None), text_config=make_text, half=True,
              std=STD, extra_reference=extra,
              prompt="<image> What is it?", image_wh=(23, 19), hub_layout=False,
              seed=seed, max_new_tokens=10, vocab_size=VOCAB, out_dir=os.path.join(FIXTURES, name))


if __name__ == "__main__":
    main()
