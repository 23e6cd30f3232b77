#!/usr/bin/env python3
"""Writes manifests/catalog/: the TinyLLaVA menu with real shapes (dev time only; no dependencies).

Shapes are the Hugging Face config.json values of each source repository; config keys follow
Chimera's family configs (LlamaConfig's style: hidden_size, intermediate_size, layers, heads,
kv_heads, head_dim, vocab_size, rope_theta, rms_norm_eps / layer_norm_eps, tie_word_embeddings,
partial_rotary_factor, ...). Weights are supplied by the user: every component reads the folder
~/.chimera/weights/<weights-id>/ (the source repository downloaded as it is, one file or sharded).

Base parts (encoders and language models as published by their authors) and the published
TinyLLaVA models (whose encoder, connector and language model all come from one checkpoint, in
TinyLLaVA_Factory's layout: vision_tower._vision_tower.*, connector._connector.*, language_model.*).

Usage: python3 Scripts/make_catalog.py
"""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "manifests" / "catalog"

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

ENCODERS = {
    "clip-vit-large-patch14-336": dict(
        family="clip-vision", source="openai/clip-vit-large-patch14-336",
        description="CLIP ViT-L/14 at 336 px (vision tower only)",
        config=dict(hidden_size=1024, layers=24, heads=16, intermediate_size=4096, image_size=336, patch_size=14,
                    layer_norm_eps=1e-5, hidden_act="quick_gelu"),
        output=dict(width=1024, tokens=577, grid=[24, 24], class_token=True),
        preprocess=dict(resize="shortest_edge", size=336, crop_size=336, mean=CLIP_MEAN, std=CLIP_STD)),
    "siglip-so400m-patch14-384": dict(
        family="siglip-vision", source="google/siglip-so400m-patch14-384",
        description="SigLIP so400m/14 at 384 px (vision tower only)",
        config=dict(hidden_size=1152, layers=27, heads=16, intermediate_size=4304, image_size=384, patch_size=14,
                    layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh"),
        output=dict(width=1152, tokens=729, grid=[27, 27], class_token=False),
        preprocess=dict(resize="exact", size=384, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])),
}


def llama_like(**kw):
    return kw


LANGUAGE_MODELS = {
    "tinyllama-1.1b-chat": dict(
        family="llama", source="TinyLlama/TinyLlama-1.1B-Chat-v1.0", context_length=2048, eos=[2], bos=1,
        config=dict(hidden_size=2048, intermediate_size=5632, layers=22, heads=32, kv_heads=4, vocab_size=32000,
                    rope_theta=10000, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    "phi-2": dict(
        family="phi", source="microsoft/phi-2", context_length=2048, eos=[50256], bos=50256,
        config=dict(hidden_size=2560, intermediate_size=10240, layers=32, heads=32, kv_heads=32, vocab_size=51200,
                    rope_theta=10000, layer_norm_eps=1e-5, partial_rotary_factor=0.4, hidden_act="gelu_new",
                    tie_word_embeddings=False)),
    "stablelm-2-1_6b": dict(
        family="stablelm", source="stabilityai/stablelm-2-1_6b", context_length=4096, eos=[100257], bos=100257,
        config=dict(hidden_size=2048, intermediate_size=5632, layers=24, heads=32, kv_heads=32, vocab_size=100352,
                    rope_theta=10000, layer_norm_eps=1e-5, partial_rotary_factor=0.25, use_qkv_bias=True,
                    tie_word_embeddings=False)),
    "qwen2-0.5b": dict(
        family="qwen2", source="Qwen/Qwen2-0.5B", context_length=32768, eos=[151643, 151645],
        config=dict(hidden_size=896, intermediate_size=4864, layers=24, heads=14, kv_heads=2, vocab_size=151936,
                    rope_theta=1000000, rms_norm_eps=1e-6, tie_word_embeddings=True)),
    "qwen2.5-0.5b": dict(
        family="qwen2", source="Qwen/Qwen2.5-0.5B", context_length=32768, eos=[151643, 151645],
        config=dict(hidden_size=896, intermediate_size=4864, layers=24, heads=14, kv_heads=2, vocab_size=151936,
                    rope_theta=1000000, rms_norm_eps=1e-6, tie_word_embeddings=True)),
    "qwen2.5-1.5b": dict(
        family="qwen2", source="Qwen/Qwen2.5-1.5B", context_length=32768, eos=[151643, 151645],
        config=dict(hidden_size=1536, intermediate_size=8960, layers=28, heads=12, kv_heads=2, vocab_size=151936,
                    rope_theta=1000000, rms_norm_eps=1e-6, tie_word_embeddings=True)),
    "qwen2.5-3b": dict(
        family="qwen2", source="Qwen/Qwen2.5-3B", context_length=32768, eos=[151643, 151645],
        config=dict(hidden_size=2048, intermediate_size=11008, layers=36, heads=16, kv_heads=2, vocab_size=151936,
                    rope_theta=1000000, rms_norm_eps=1e-6, tie_word_embeddings=True)),
    "gemma-2b": dict(
        family="gemma", source="google/gemma-2b", context_length=8192, eos=[1], bos=2,
        config=dict(hidden_size=2048, intermediate_size=16384, layers=18, heads=8, kv_heads=1, head_dim=256,
                    vocab_size=256000, rope_theta=10000, rms_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
                    tie_word_embeddings=True)),
}

# Published TinyLLaVA models: (id, source, encoder, language model, template, layout).
FACTORY = dict(encoder="vision_tower._vision_tower.vision_model.", connector="connector._connector.", llm="language_model.")
LEGACY = dict(encoder="model.vision_tower.vision_tower.vision_model.", connector="model.mm_projector.", llm="")
TINYLLAVA = [
    ("tinyllava-phi-2-siglip-3.1b", "tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B", "siglip-so400m-patch14-384", "phi-2", "phi", FACTORY),
    ("tinyllava-gemma-siglip-2.4b", "tinyllava/TinyLLaVA-Gemma-SigLIP-2.4B", "siglip-so400m-patch14-384", "gemma-2b", "gemma", FACTORY),
    ("tinyllava-qwen2-0.5b-siglip", "Zhang199/TinyLLaVA-Qwen2-0.5B-SigLIP", "siglip-so400m-patch14-384", "qwen2-0.5b", "qwen2_base", FACTORY),
    ("tinyllava-qwen2.5-3b-siglip", "Zhang199/TinyLLaVA-Qwen2.5-3B-SigLIP", "siglip-so400m-patch14-384", "qwen2.5-3b", "qwen2_base", FACTORY),
    # Trained with the legacy TinyLLaVABench code (LLaVA layout; TinyLLaVA_Factory's
    # convert_legecy_weights_to_tinyllavafactory.py maps it): TinyLLaVA-1.5B (TinyLlama + SigLIP) and
    # TinyLLaVA-2.0B (StableLM-2-Zephyr-1.6B, the shapes of stablelm-2-1_6b, + SigLIP).
    ("tinyllava-tinyllama-siglip-1.5b", "bczhou/TinyLLaVA-1.5B", "siglip-so400m-patch14-384", "tinyllama-1.1b-chat", "llama", LEGACY),
    ("tinyllava-stablelm-2-siglip-2.0b", "bczhou/TinyLLaVA-2.0B", "siglip-so400m-patch14-384", "stablelm-2-1_6b", "phi", LEGACY),
]


def weights(folder, prefix=""):
    return {"files": [f"~/.chimera/weights/{folder}/"], "prefix": prefix}


def encoder(id, e, folder, prefix, description, source, tinyllava=False):
    # TinyLLaVA pads images to a square (expand2square) after opening them with PIL's convert("RGB"),
    # which drops any alpha.
    preprocess = dict(e["preprocess"], pad_to_square=True, alpha="drop") if tinyllava else dict(e["preprocess"], pad_to_square=False)
    m = {"schema": "chimera.component/v1", "id": id, "kind": "encoder", "modality": "image", "family": e["family"],
         "description": description, "config": e["config"], "output": e["output"],
         "preprocess": preprocess, "weights": weights(folder, prefix), "source": source}
    return m


def language_model(id, l, folder, prefix, description, source):
    tok = {"file": f"~/.chimera/weights/{folder}/tokenizer.json", "eos_token_ids": l["eos"]}
    if "bos" in l:
        tok["bos_token_id"] = l["bos"]
    return {"schema": "chimera.component/v1", "id": id, "kind": "language_model", "family": l["family"],
            "description": description, "config": l["config"], "context_length": l["context_length"],
            "tokenizer": tok, "weights": weights(folder, prefix), "source": source}


def write(m, name):
    (OUT / name).write_text(json.dumps(m, indent=2) + "\n")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    for id, e in ENCODERS.items():
        write(encoder(id, e, id, "vision_model.", e["description"], e["source"]), f"{id}.component.json")
    for id, l in LANGUAGE_MODELS.items():
        write(language_model(id, l, id, "", f"{l['source']} ({l['family']})", l["source"]), f"{id}.component.json")
    for id, source, enc, llm, template, layout in TINYLLAVA:
        e, l = ENCODERS[enc], LANGUAGE_MODELS[llm]
        name = source.split("/")[1]
        # TinyLLaVA pads images to a square of the mean colour ("image_aspect_ratio": "pad").
        write(encoder(f"{id}-vision", e, id, layout["encoder"], f"{name}: its {enc} vision tower", source, tinyllava=True),
              f"{id}-vision.component.json")
        write({"schema": "chimera.component/v1", "id": f"{id}-connector", "kind": "connector", "family": "mlp",
               "description": f"{name}: its mlp2x_gelu connector (nn.Sequential: Linear, GELU, Linear)",
               "config": {"depth": 2, "activation": "gelu", "layer_names": ["0", "2"]},
               "input_width": e["output"]["width"], "output_width": l["config"]["hidden_size"],
               "weights": weights(id, layout["connector"]), "source": source}, f"{id}-connector.component.json")
        write(language_model(f"{id}-llm", l, id, layout["llm"], f"{name}: its fine-tuned {llm}", source),
              f"{id}-llm.component.json")
        write({"schema": "chimera.assembly/v1", "id": id, "description": f"{name} ({source})",
               "language_model": f"{id}-llm",
               "inputs": [{"placeholder": "<image>", "encoder": f"{id}-vision", "feature_layer": -2, "select": "patch",
                           "connector": f"{id}-connector"}],
               "chat_template": template, "generation": {"max_tokens": 512, "temperature": 0}},
              f"{id}.assembly.json")
    print(f"wrote {len(list(OUT.glob('*.json')))} manifests to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
