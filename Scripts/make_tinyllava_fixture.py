#!/usr/bin/env python3
"""A tiny TinyLLaVA_Factory-layout checkpoint (SigLIP + MLP2x-GELU + Phi, "patch" selection,
image_aspect_ratio "pad") and its reference greedy continuation.

Dev-time only. TinyLLaVA's own package is not needed: its forward is re-stated here from
TinyLLaVA_Factory (tinyllava/model/modeling_tinyllava.py, vision_tower/base.py, connector/mlp.py,
and LLaVA's tokenizer_image_token): the vision tower's hidden_states[-2] minus the first token,
an nn.Sequential(Linear, GELU, Linear) connector, and the image features spliced where the
textual <image> stands (IMAGE_TOKEN_INDEX -200, not a vocabulary entry).
Writes Tests/ChimeraTests/Fixtures/tinyllava-phi-siglip/.
"""
import json, os, sys
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import SiglipVisionConfig, SiglipVisionModel, PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast
from transformers import SiglipImageProcessorPil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "ChimeraTests", "Fixtures", "tinyllava-phi-siglip")
IMAGE_TOKEN_INDEX = -200

CORPUS = """Describe the image in detail. A red square on a gradient. The sky is blue and the grass is green.
Question: what colour is the square? Answer: red. 0 1 2 3 4 5 6 7 8 9. Small models run on a CPU.""" * 30


def byte_level_tokenizer(vocab_size):
    """GPT-2 / Phi-2 style byte-level BPE (no BOS)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def expand2square(img, background):
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), background)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def tokenizer_image_token(prompt, tokenizer):
    chunks = [tokenizer(c).input_ids for c in prompt.split("<image>")]
    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id and tokenizer.bos_token_id is not None \
            and getattr(tokenizer, "add_bos_token", False):
        offset = 1
        ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


def main():
    torch.manual_seed(14)
    tokenizer = byte_level_tokenizer(300)
    vision_cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                    image_size=28, patch_size=7, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
    text_cfg = PhiConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         partial_rotary_factor=0.5, rope_theta=10000.0, layer_norm_eps=1e-5, hidden_act="gelu_new",
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    vision = SiglipVisionModel(vision_cfg).eval()
    llm = PhiForCausalLM(text_cfg).eval()
    connector = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64)).eval()
    with torch.no_grad():
        for module in (vision, llm, connector):
            for p in module.parameters():
                p.normal_(0, 0.08) if p.dim() >= 2 else p.add_(torch.randn_like(p) * 0.05)

    os.makedirs(OUT, exist_ok=True)
    state = {}
    state.update({"language_model." + k: v for k, v in llm.state_dict().items()})
    state.update({"vision_tower._vision_tower." + k: v for k, v in vision.state_dict().items()
                  if not k.startswith("vision_model.head.")})
    state.update({"connector._connector." + k: v for k, v in connector.state_dict().items()})
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt"})
    text_dict = text_cfg.to_dict()
    vision_dict = vision_cfg.to_dict()
    config = {
        "architectures": ["TinyLlavaForConditionalGeneration"], "model_type": "tinyllava",
        "llm_model_name_or_path": "microsoft/phi-2", "vision_model_name_or_path": "google/siglip-so400m-patch14-384",
        "connector_type": "mlp2x_gelu", "hidden_size": 64, "vision_hidden_size": 32, "vocab_size": len(tokenizer),
        "image_token_index": IMAGE_TOKEN_INDEX, "ignore_index": -100, "pad_token": "<|endoftext|>",
        "pad_token_id": tokenizer.eos_token_id, "tokenizer_model_max_length": 256, "tokenizer_padding_side": "right",
        "vision_feature_layer": -2, "vision_feature_select_strategy": "patch", "image_aspect_ratio": "pad",
        "text_config": text_dict, "vision_config": vision_dict, "use_cache": True,
    }
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tokenizer.save_pretrained(OUT)
    processor = SiglipImageProcessorPil(size={"height": 28, "width": 28}, resample=3)
    processor.save_pretrained(OUT)

    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:40, 0:56]
    pixels = np.stack([x * 4, y * 6, (x + y) * 3], -1) % 256
    pixels[10:20, 20:30] = [230, 30, 30]
    image = Image.fromarray(np.clip(pixels + rng.integers(-10, 10, pixels.shape), 0, 255).astype(np.uint8), "RGB")
    image.save(os.path.join(OUT, "sample.png"))

    prompt = "Question: <image>\nWhat colour is the square? Answer:"
    padded = expand2square(image, tuple(int(v * 255) for v in processor.image_mean))
    pixel_values = processor(images=padded, return_tensors="pt")["pixel_values"]
    input_ids = tokenizer_image_token(prompt, tokenizer)
    with torch.no_grad():
        features = vision(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
        features = connector(features)[0]
        embed = llm.get_input_embeddings()
        split = input_ids.index(IMAGE_TOKEN_INDEX)
        before = embed(torch.tensor(input_ids[:split]))
        after = embed(torch.tensor(input_ids[split + 1:]))
        embeds = torch.cat([before, features, after])[None]
        logits = llm(inputs_embeds=embeds).logits[0]
        generated = llm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                 max_new_tokens=12, do_sample=False)[0].tolist()
    save_file({"pixel_values": pixel_values[0].contiguous(), "projected": features.contiguous(), "logits": logits.contiguous()},
              os.path.join(OUT, "reference.safetensors"))
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump({"prompt": prompt, "input_ids": input_ids, "generated": generated, "max_new_tokens": 12,
                   "image": "sample.png", "text": tokenizer.decode(generated)}, f, indent=1)
    print("tinyllava generated", generated, file=sys.stderr)


if __name__ == "__main__":
    main()
