#!/usr/bin/env python3
"""Tiny random LLaVA (CLIP + MLP + Llama) checkpoints and transformers' reference outputs.

Dev-time only (needs torch, transformers, tokenizers, safetensors, Pillow). Writes:
  Tests/ChimeraTests/Fixtures/llava-a/   transformers 5 layout (model.vision_tower.*, rope_parameters)
  Tests/ChimeraTests/Fixtures/llava-b/   hub layout (vision_tower.*, language_model.model.*, rope_theta)
  manifests/default/checkpoint/          the embedded default model (imported by `chimera import`)
Each test checkpoint folder also gets reference.safetensors + reference.json: pixel values, the
selected vision hidden state, projector output, prompt logits and the greedy continuation.
"""
import copy, json, os, sys
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file, load_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, processors, trainers
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                          PreTrainedTokenizerFast, LlavaProcessor)
from transformers import CLIPImageProcessorPil as CLIPImageProcessor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests", "ChimeraTests", "Fixtures")

CORPUS = """The quick brown fox jumps over the lazy dog. A picture shows a cat sitting on a red mat.
What is in the image? Describe the image in detail. There are two birds on a wire under a blue sky.
USER: <image>\nWhat colour is the car? ASSISTANT: The car is red. Numbers 0 1 2 3 4 5 6 7 8 9 10 42 2024.
Les élèves étudient à l'école. 你好，世界。 Emoji: 🙂 🚗 ☀️. Small models run fast on a CPU.""" * 20


def train_tokenizer(vocab_size):
    """SentencePiece-style BPE with byte fallback, laid out as modern Llama tokenizer.json files."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + byte_tokens,
                                  show_progress=False)
    tok.train_from_iterator([CORPUS], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.add_special_tokens(["<image>"])
    tok.add_tokens(["<pad>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    return fast


def sample_image(width, height, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                    ((x + y) * 7) % 256], axis=-1).astype(np.int32)
    img[height // 4: height // 2, width // 3: 2 * width // 3] = [220, 40, 40]
    img = np.clip(img + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img, "RGB")


def widen(model, std=0.08, half=False):
    """Random init puts tiny values everywhere; widen them so outputs are not all alike. `half` rounds
    every parameter to a float16 value (for fixtures stored as float16)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, std)
            else:
                p.add_(torch.randn_like(p) * 0.05)
            if half:
                p.copy_(p.half().float())


def build(name, *, vision, text, image_size, patch, prompt, image_wh, hub_layout, seed, max_new_tokens,
          vocab_size, out_dir, reference=True, text_config=None, half=False, std=0.08, extra_reference=None):
    """text_config(tokenizer) -> a transformers text config replaces the Llama one (other LM families);
    half rounds every weight to float16 and stores float16 (smaller fixtures, exact references);
    extra_reference(model, inputs, projected, image_token_id) -> more tensors for reference.safetensors."""
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(vocab_size)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vcfg = CLIPVisionConfig(image_size=image_size, patch_size=patch, projection_dim=vision["hidden"], **{
        k: v for k, v in dict(hidden_size=vision["hidden"], intermediate_size=vision["ffn"],
                              num_hidden_layers=vision["layers"], num_attention_heads=vision["heads"]).items()})
    tcfg = text_config(tokenizer) if text_config else LlamaConfig(hidden_size=text["hidden"], intermediate_size=text["ffn"], num_hidden_layers=text["layers"],
                       num_attention_heads=text["heads"], num_key_value_heads=text["kv_heads"],
                       vocab_size=len(tokenizer), max_position_embeddings=text["context"],
                       rope_theta=text["theta"], rms_norm_eps=text["eps"], tie_word_embeddings=text.get("tied", False),
                       bos_token_id=1, eos_token_id=2, pad_token_id=tokenizer.pad_token_id)
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_id=image_token_id,
                      projector_hidden_act="gelu", vision_feature_select_strategy="default",
                      vision_feature_layer=-2, tie_word_embeddings=text.get("tied", False))
    model = LlavaForConditionalGeneration(cfg).eval()
    widen(model, std, half)
    os.makedirs(out_dir, exist_ok=True)
    save_model(model, out_dir, half)
    improc = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                                do_center_crop=True, resample=3)
    processor = LlavaProcessor(image_processor=improc, tokenizer=tokenizer, patch_size=patch,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    processor.save_pretrained(out_dir)
    if half:
        compact_json(os.path.join(out_dir, "tokenizer.json"))
    rewrite_layout(out_dir, text["theta"], hub=hub_layout)
    image = sample_image(*image_wh, seed)
    image.save(os.path.join(out_dir, "sample.png"))
    if not reference:
        return
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        vout = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True)
        selected = vout.hidden_states[-2][:, 1:]
        projected = model.model.multi_modal_projector(selected)
        logits = model(**inputs).logits
        gen = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = gen[0, inputs["input_ids"].shape[1]:].tolist()
    extra = extra_reference(model, inputs, projected, image_token_id) if extra_reference else {}
    save_file({**extra,
        "pixel_values": inputs["pixel_values"][0].contiguous(),
        "vision_hidden_states": torch.stack(vout.hidden_states, 0)[:, 0].contiguous(),
        "projected": projected[0].contiguous(),
        "logits": logits[0].contiguous(),
    }, os.path.join(out_dir, "reference.safetensors"))
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump({"prompt": prompt, "input_ids": inputs["input_ids"][0].tolist(), "generated": new_tokens,
                   "max_new_tokens": max_new_tokens, "image": "sample.png", "image_token_id": image_token_id,
                   "text": tokenizer.decode(new_tokens)}, f, indent=1)
    print(name, "generated", new_tokens, file=sys.stderr)


def compact_json(path):
    """Rewrites a JSON file without indentation (tokenizer.json is mostly whitespace)."""
    with open(path) as f:
        value = json.load(f)
    with open(path, "w") as f:
        json.dump(value, f, ensure_ascii=False, separators=(",", ":"))


def save_model(model, out_dir, half=False):
    """Saves float32, or float16 (the references stay float32 runs of the same rounded weights)."""
    if not half:
        model.save_pretrained(out_dir)
        return
    # A copy: half() would also round buffers (RoPE inverse frequencies) of the model the references run.
    copy.deepcopy(model).half().save_pretrained(out_dir)


def rewrite_layout(out_dir, theta, hub):
    """transformers 5.24 saves `vision_tower.embeddings.*`, `language_model.model.*`. Rewrite into the
    two layouts published checkpoints use: the hub layout of llava-1.5 (vision_tower.vision_model.*,
    language_model.model.*, rope_theta in text_config, preprocessor_config.json) or the newer one
    (model.vision_tower.vision_model.*, model.language_model.*, lm_head.*, rope_parameters)."""
    path = os.path.join(out_dir, "model.safetensors")
    renamed = {}
    for k, v in load_file(path).items():
        if k.startswith("vision_tower."):
            k = "vision_tower.vision_model." + k[len("vision_tower."):]
        if not hub:
            if k.startswith("language_model.model."):
                k = "model.language_model." + k[len("language_model.model."):]
            elif k.startswith("language_model.lm_head."):
                k = k[len("language_model."):]
            else:
                k = "model." + k
        renamed[k] = v.contiguous()
    save_file(renamed, path, metadata={"format": "pt"})
    if not hub:
        return
    cfg_path = os.path.join(out_dir, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    text = cfg["text_config"]
    text.pop("rope_parameters", None)
    text["rope_theta"] = theta
    text["rope_scaling"] = None
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(out_dir, "processor_config.json")) as f:
        proc = json.load(f)
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
        json.dump(proc.pop("image_processor"), f, indent=2)
    with open(os.path.join(out_dir, "processor_config.json"), "w") as f:
        json.dump(proc, f, indent=2)


def main():
    torch.set_default_dtype(torch.float32)
    build("llava-a", vision=dict(hidden=32, ffn=64, layers=3, heads=4), image_size=32, patch=8,
          text=dict(hidden=64, ffn=128, layers=2, heads=4, kv_heads=2, context=256, theta=10000.0, eps=1e-5),
          prompt="USER: <image>\nWhat is in the image? ASSISTANT:", image_wh=(61, 45), hub_layout=False,
          seed=1, max_new_tokens=12, vocab_size=400, out_dir=os.path.join(FIXTURES, "llava-a"))
    build("llava-b", vision=dict(hidden=48, ffn=96, layers=2, heads=3), image_size=28, patch=7,
          text=dict(hidden=48, ffn=96, layers=3, heads=6, kv_heads=1, context=128, theta=500.0, eps=1e-6, tied=True),
          prompt="Describe <image> the picture.", image_wh=(40, 64), hub_layout=True,
          seed=2, max_new_tokens=10, vocab_size=350, out_dir=os.path.join(FIXTURES, "llava-b"))
    build("default", vision=dict(hidden=64, ffn=128, layers=2, heads=4), image_size=64, patch=16,
          text=dict(hidden=128, ffn=256, layers=4, heads=8, kv_heads=4, context=512, theta=10000.0, eps=1e-5),
          prompt="USER: <image>\nDescribe the image. ASSISTANT:", image_wh=(96, 72), hub_layout=False,
          seed=3, max_new_tokens=24, vocab_size=1000, out_dir=os.path.join(ROOT, "manifests", "default", "checkpoint"))


if __name__ == "__main__":
    main()
