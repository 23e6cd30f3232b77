#!/usr/bin/env python3
"""transformers' greedy continuation under a repetition penalty, for the language-model fixtures.

Dev-time only (needs torch and transformers). For each Tests/ChimeraTests/Fixtures/lm-* folder that
make_lm_fixtures.py wrote, loads the model in float32 and writes reference_repetition.json: the
penalty, the input ids (those of reference.json) and model.generate(do_sample=False,
repetition_penalty=PENALTY)'s new tokens. Only the continuation is new: the fixtures' weights and
reference.json stay as they are.
"""
import json, os
import torch
from transformers import AutoModelForCausalLM

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


if __name__ == "__main__":
    main()
