#!/usr/bin/env python3
"""transformers' per-window loss over a text, for the language-model fixtures (`chimera perplexity`).

Dev-time only (needs torch and transformers). For each Tests/ChimeraTests/Fixtures/lm-* folder that
make_lm_fixtures.py wrote, loads the model in float32 and its tokenizer.json, tokenizes TEXT as a
prompt is tokenized (special tokens added), cuts the ids into windows of WINDOW tokens (the last one
shorter), and writes reference_perplexity.json: the text, the window, the ids, and for each window
model(ids, labels=ids).loss times its predictions (the summed negative log-likelihood, in nats, of
each token after the window's first given those before it). The fixtures' weights stay as they are.
"""
import json, math, os
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "ChimeraTests", "Fixtures")
NAMES = ["lm-llama", "lm-qwen2", "lm-gemma", "lm-phi", "lm-stablelm-a", "lm-stablelm-b"]
WINDOW = 16
TEXT = ("The quick brown fox jumps over the lazy dog. A small model reads the text one token at a time, "
        "and the loss says how surprised it was by each next token: numbers 0 1 2 3, a cat, a mat.")


def main():
    for name in NAMES:
        folder = os.path.join(FIXTURES, name)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(folder, "tokenizer.json"))
        ids = tokenizer(TEXT)["input_ids"]
        windows = []
        with torch.no_grad():
            for start in range(0, len(ids), WINDOW):
                window = ids[start:start + WINDOW]
                if len(window) < 2:
                    continue
                tensor = torch.tensor([window])
                loss = model(input_ids=tensor, labels=tensor).loss.item()
                windows.append({"start": start, "predictions": len(window) - 1, "nll_sum": loss * (len(window) - 1)})
        predictions = sum(w["predictions"] for w in windows)
        nll = sum(w["nll_sum"] for w in windows)
        reference = {"text": TEXT, "window": WINDOW, "input_ids": ids, "windows": windows,
                     "predictions": predictions, "mean_nll": nll / predictions, "perplexity": math.exp(nll / predictions)}
        with open(os.path.join(folder, "reference_perplexity.json"), "w") as f:
            json.dump(reference, f, indent=1)
        print(name, len(ids), "tokens,", len(windows), "windows, perplexity", reference["perplexity"])


if __name__ == "__main__":
    main()
