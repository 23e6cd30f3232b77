#!/usr/bin/env python3
"""Tiny random language models of every supported family, and LLaVA checkpoints pairing CLIP with
Qwen2 and Gemma, with transformers' reference outputs.

Dev-time only (needs torch, transformers, tokenizers, safetensors, Pillow). Writes under
Tests/ChimeraTests/Fixtures/:
  lm-<name>/      a *ForCausalLM folder (save_pretrained, float16 weights, tokenizer.json) plus
                  reference.safetensors (float32 logits over the input ids) and reference.json
                  (input ids, greedy continuation from model.generate(do_sample=False)).
  llava-qwen2/, llava-gemma/   as make_llava_fixtures.py writes its LLaVA folders.
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
}


def build_lm(name, model_class, make_config, seed, max_new_tokens=10):
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(VOCAB)
    model = model_class(make_config(tokenizer)).eval()
    widen(model, STD, half=True)
    out_dir = os.path.join(FIXTURES, f"lm-{name}")
    os.makedirs(out_dir, exist_ok=True)
    save_model(model, out_dir, half=True)
    tokenizer.save_pretrained(out_dir)
    compact_json(os.path.join(out_dir, "tokenizer.json"))
    input_ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
        generated = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                   max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = generated[0, input_ids.shape[1]:].tolist()
    save_file({"logits": logits[0].contiguous()}, os.path.join(out_dir, "reference.safetensors"))
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump({"prompt": PROMPT, "input_ids": input_ids[0].tolist(), "generated": new_tokens,
                   "max_new_tokens": max_new_tokens}, f, indent=1)
    print(name, "generated", new_tokens, file=sys.stderr)


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
    torch.set_default_dtype(torch.float32)
    for seed, (name, (model_class, make_config)) in enumerate(LANGUAGE_MODELS.items(), start=10):
        build_lm(name, model_class, make_config, seed)
    tiny_clip = dict(hidden=16, ffn=32, layers=2, heads=2)
    for name, family, seed, extra in [("llava-qwen2", "qwen2", 30, None), ("llava-gemma", "gemma", 31, logits_with_scaled_features)]:
        make_text = LANGUAGE_MODELS[family][1]
        build(name, vision=tiny_clip, image_size=16, patch=8, text=dict(tied=True, theta=None), text_config=make_text, half=True,
              std=STD, extra_reference=extra,
              prompt="<image> What is it?", image_wh=(23, 19), hub_layout=False,
              seed=seed, max_new_tokens=10, vocab_size=VOCAB, out_dir=os.path.join(FIXTURES, name))


if __name__ == "__main__":
    main()
