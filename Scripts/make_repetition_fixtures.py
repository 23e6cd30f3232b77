#!/usr/bin/env python3
"""transformers' greedy continuation under a repetition penalty, for the language-model fixtures.

Dev-time only (needs torch and transformers). For each Tests/ChimeraTests/Fixtures/lm-* folder that
make_lm_fixtures.py wrote, loads the model in float32 and writes reference_repetition.json: the
penalty, the input ids (those of reference.json) and model.generate(do_sample=False,
repetition_penalty=PENALTY)'s new tokens. Only the continuation is new: the fixtures' weights and
reference.json stay as they are.

Two multimodal fixtures too, where what the penalty counts differs: llava-a runs as LLaVA does
(input_ids holding the image token once a feature row, all of them counted), tinyllava-phi-siglip
as TinyLLaVA does (the language model's generate(inputs_embeds=...): its input_ids start empty, so
only the answer is counted).
"""
import json, os
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration, PhiConfig, PhiForCausalLM

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "ChimeraTests", "Fixtures")
PENALTY = 1.5
NAMES = ["lm-llama", "lm-qwen2", "lm-gemma", "lm-phi", "lm-stablelm-a", "lm-stablelm-b"]


def main():
    for name in NAMES:
        folder = os.path.join(FIXTURES, name)
        with open(os.path.join(folder, "reference.json")) as f:
            reference = json.load(f)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        ids = torch.tensor([reference["input_ids"]])
        n = reference["max_new_tokens"]
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, repetition_penalty=PENALTY,
                                 max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0)
        generated = out[0, ids.shape[1]:].tolist()
        # A test only where the penalty changes the answer.
        assert generated != reference["generated"][:len(generated)], f"{name}: the penalty leaves the greedy answer as it was"
        with open(os.path.join(folder, "reference_repetition.json"), "w") as f:
            json.dump({"repetition_penalty": PENALTY, "input_ids": reference["input_ids"], "generated": generated}, f, indent=1)
        print(name, generated)
    llava()
    tinyllava()


def write(folder, reference, generated, input_ids):
    assert generated != reference["generated"][:len(generated)], f"{folder}: the penalty leaves the greedy answer as it was"
    with open(os.path.join(folder, "reference_repetition.json"), "w") as f:
        json.dump({"repetition_penalty": PENALTY, "input_ids": input_ids, "generated": generated}, f, indent=1)
    print(os.path.basename(folder), generated)


def llava():
    folder = os.path.join(FIXTURES, "llava-a")
    with open(os.path.join(folder, "reference.json")) as f:
        reference = json.load(f)
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([reference["input_ids"]])
    pixels = safe_open(os.path.join(folder, "reference.safetensors"), "pt").get_tensor("pixel_values")
    pixels = pixels[None] if pixels.dim() == 3 else pixels
    n = reference["max_new_tokens"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids), do_sample=False,
                             repetition_penalty=PENALTY, max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0)
    write(folder, reference, out[0, ids.shape[1]:].tolist(), reference["input_ids"])


def tinyllava():
    folder = os.path.join(FIXTURES, "tinyllava-phi-siglip")
    with open(os.path.join(folder, "reference.json")) as f:
        reference = json.load(f)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    llm = PhiForCausalLM(PhiConfig(**config["text_config"])).eval()
    weights = load_file(os.path.join(folder, "model.safetensors"))
    llm.load_state_dict({k[len("language_model."):]: v for k, v in weights.items() if k.startswith("language_model.")})
    projected = safe_open(os.path.join(folder, "reference.safetensors"), "pt").get_tensor("projected")
    ids = reference["input_ids"]
    split = ids.index(-200)
    n = reference["max_new_tokens"]
    with torch.no_grad():
        embed = llm.get_input_embeddings()
        embeds = torch.cat([embed(torch.tensor(ids[:split])), projected, embed(torch.tensor(ids[split + 1:]))])[None]
        out = llm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long), do_sample=False,
                           repetition_penalty=PENALTY, max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0)
    write(folder, reference, out[0].tolist(), ids)


if __name__ == "__main__":
    main()
