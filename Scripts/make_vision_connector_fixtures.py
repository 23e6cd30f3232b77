#!/usr/bin/env python3
"""Fixtures for the SigLIP vision family and the token-changing connectors.

Dev-time only (needs torch, transformers, tokenizers, safetensors, Pillow). Writes under
Tests/ChimeraTests/Fixtures/:
  vc-siglip/         a tiny random transformers SiglipVisionModel (save_pretrained) and
                     reference.safetensors: pixel_values, hidden_states [layers + 1, tokens, width]
  vc-connectors/     <name>.safetensors (weights under their published names) and <name>.io.safetensors
                     (input [N, V], output [M, H]) for resampler, ldpv2, pixel-shuffle. The modules
                     below re-state the published definitions in plain PyTorch:
                       resampler      TinyLLaVA_Factory tinyllava/model/connector/resampler.py
                       ldpv2          MobileVLM mobilevlm/model/vision_projector.py LDPNetV2Projector
                       pixel-shuffle  nanoVLM models/modality_projector.py ModalityProjector
  vc-llava-siglip/   a LLaVA checkpoint (LlavaForConditionalGeneration) with a SigLIP tower, a Llama LM,
                     vision_feature_select_strategy "full", and the same reference files as
                     make_llava_fixtures.py writes (greedy ids included).
"""
import json, math, os, sys, zlib
import torch
from torch import nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_llava_fixtures import FIXTURES, train_tokenizer, sample_image, rewrite_layout, widen
from transformers import (SiglipVisionConfig, SiglipVisionModel, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor)
from transformers import SiglipImageProcessor


def write_manifest(directory, name, manifest):
    manifest = {"schema": "chimera.component/v1", **manifest}
    with open(os.path.join(directory, f"{name}.component.json"), "w") as f:
        json.dump(manifest, f, indent=2)


# ---------------------------------------------------------------- SigLIP vision tower

def siglip():
    torch.manual_seed(11)
    out = os.path.join(FIXTURES, "vc-siglip")
    cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                             image_size=36, patch_size=8, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
                             vision_use_head=False)
    model = SiglipVisionModel(cfg).eval()
    widen(model)
    model.save_pretrained(out)
    # 36 is not a multiple of 8: the conv drops the last 4 pixel rows and columns (as so400m's 384 / 14).
    pixels = torch.rand(1, 3, 36, 36) * 2 - 1
    with torch.no_grad():
        o = model(pixel_values=pixels, output_hidden_states=True)
    save_file({"pixel_values": pixels[0].contiguous(),
               "hidden_states": torch.stack(o.hidden_states, 0)[:, 0].contiguous()},
              os.path.join(out, "reference.safetensors"))
    write_manifest(out, "siglip", {
        "id": "vc-siglip", "kind": "encoder", "modality": "image", "family": "siglip-vision",
        "config": {"hidden_size": 32, "layers": 3, "heads": 4, "intermediate_size": 64, "image_size": 36,
                   "patch_size": 8},
        "output": {"width": 32, "tokens": 16, "grid": [4, 4], "class_token": False},
        "preprocess": {"resize": "exact", "size": 36, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "weights": {"files": ["model.safetensors"]}})  # transformers 5 saves the tower's names bare


# ---------------------------------------------------------------- connectors (published definitions)

class PerceiverAttention(nn.Module):
    def __init__(self, dim, dim_head, heads):
        super().__init__()
        self.scale, self.heads = dim_head ** -0.5, heads
        inner = dim_head * heads
        self.norm_media, self.norm_latents = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x, latents):  # x [n1, D], latents [n2, D]
        x, latents = self.norm_media(x), self.norm_latents(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        split = lambda t: t.reshape(t.shape[0], self.heads, -1).transpose(0, 1)  # [h, n, d]
        q, k, v = split(q) * self.scale, split(k), split(v)
        sim = q @ k.transpose(-1, -2)
        attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
        out = (attn @ v).transpose(0, 1).reshape(q.shape[1], -1)
        return self.to_out(out)


def feed_forward(dim, mult=4):
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class PerceiverResampler(nn.Module):
    def __init__(self, vision_width, dim, depth, num_queries, heads, dim_head):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_queries, dim))
        self.linear = nn.Linear(vision_width, dim)
        self.layers = nn.ModuleList([nn.ModuleList([PerceiverAttention(dim, dim_head, heads), feed_forward(dim)])
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.linear(x)
        latents = self.latents
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents)


class LDPNetV2Projector(nn.Module):
    def __init__(self, inc, ouc, grid):
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.mlp = nn.Sequential(nn.Linear(inc, ouc), nn.GELU(), nn.Linear(ouc, ouc))
        self.dwn = nn.Module()
        self.dwn.dwn = nn.Sequential(nn.AdaptiveAvgPool2d(grid))
        self.peg = nn.Module()
        self.peg.peg = nn.Sequential(nn.Conv2d(ouc, ouc, 3, 1, 1, bias=True, groups=ouc))

    def forward(self, x):  # [N, V]
        x = self.mlp.mlp(x)
        n, c = x.shape
        h = int(math.sqrt(n))
        x = self.dwn.dwn(x.t().reshape(1, c, h, h))
        x = self.peg.peg(x) + x
        return x.flatten(2)[0].t()


class PixelShuffleProjector(nn.Module):
    def __init__(self, vision_width, out_width, factor):
        super().__init__()
        self.factor = factor
        self.proj = nn.Linear(vision_width * factor ** 2, out_width, bias=False)

    def forward(self, x):  # [N, V]
        seq, d = x.shape
        side, f = int(seq ** 0.5), self.factor
        x = x.reshape(side // f, f, side // f, f, d).permute(0, 2, 1, 3, 4).reshape(seq // f ** 2, d * f * f)
        return self.proj(x)


def connectors():
    out = os.path.join(FIXTURES, "vc-connectors")
    os.makedirs(out, exist_ok=True)
    # Widths 32 → 48 are those of vc-llava-siglip's tower and LM, so tests can assemble them.
    cases = {
        "resampler": (lambda: PerceiverResampler(32, 48, depth=2, num_queries=6, heads=4, dim_head=8), 20, 32,
                      {"num_queries": 6, "layers": 2, "heads": 4, "dim_head": 8}),
        "ldpv2": (lambda: LDPNetV2Projector(32, 48, (3, 3)), 49, 32, {"grid": [3, 3]}),
        "pixel-shuffle": (lambda: PixelShuffleProjector(32, 48, 2), 36, 32, {"factor": 2}),
    }
    for name, (make, tokens, width, config) in cases.items():
        torch.manual_seed(zlib.crc32(name.encode()) % 1000)
        module = make().eval()
        widen(module)
        x = torch.randn(tokens, width)
        with torch.no_grad():
            y = module(x)
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, os.path.join(out, f"{name}.safetensors"))
        save_file({"input": x, "output": y.contiguous()}, os.path.join(out, f"{name}.io.safetensors"))
        write_manifest(out, name, {"id": f"vc-{name}", "kind": "connector", "family": name, "config": config,
                                   "input_width": width, "output_width": 48,
                                   "weights": {"files": [f"{name}.safetensors"]}})
        print(name, tuple(x.shape), "->", tuple(y.shape), file=sys.stderr)


# ---------------------------------------------------------------- LLaVA with a SigLIP tower

def llava_siglip():
    torch.manual_seed(12)
    out = os.path.join(FIXTURES, "vc-llava-siglip")
    tokenizer = train_tokenizer(300)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vcfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8)
    tcfg = LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=128,
                       rope_theta=10000.0, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                       pad_token_id=tokenizer.pad_token_id)
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_id=image_token_id,
                      projector_hidden_act="gelu", vision_feature_select_strategy="full", vision_feature_layer=-2)
    model = LlavaForConditionalGeneration(cfg).eval()
    widen(model)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    improc = SiglipImageProcessor(size={"height": 32, "width": 32}, resample=3,
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = LlavaProcessor(image_processor=improc, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="full", num_additional_image_tokens=0)
    processor.save_pretrained(out)
    rewrite_layout(out, 10000.0, hub=False)
    image = sample_image(50, 38, 12)
    image.save(os.path.join(out, "sample.png"))
    prompt = "USER: <image>\nWhat is in the image? ASSISTANT:"
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        vout = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True)
        projected = model.model.multi_modal_projector(vout.hidden_states[-2])
        logits = model(**inputs).logits
        gen = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    new_tokens = gen[0, inputs["input_ids"].shape[1]:].tolist()
    save_file({"pixel_values": inputs["pixel_values"][0].contiguous(),
               "vision_hidden_states": torch.stack(vout.hidden_states, 0)[:, 0].contiguous(),
               "projected": projected[0].contiguous(), "logits": logits[0].contiguous()},
              os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"prompt": prompt, "input_ids": inputs["input_ids"][0].tolist(), "generated": new_tokens,
                   "max_new_tokens": 10, "image": "sample.png", "image_token_id": image_token_id,
                   "text": tokenizer.decode(new_tokens)}, f, indent=1)
    print("llava-siglip generated", new_tokens, file=sys.stderr)


if __name__ == "__main__":
    torch.set_default_dtype(torch.float32)
    siglip()
    connectors()
    llava_siglip()
