#!/usr/bin/env python3
"""transformers' per-window loss over a text, for the language-model fixtures (`chimera perplexity`).

Dev-time only (needs torch and transformers). For each Tests/ChimeraTests/Fixtures/lm-* folder that
make_lm_fixtures.py wrote, loads the model in float32 and its tokenizer.json, tokenizes TEXT as a
prompt is tokenized (special tokens added), cuts the ids into windows of WINDOW tokens (the last one
shorter), and writes reference_perplexity.json: the text, the window, the ids, and for each window
model(ids, labels=ids).loss times its predictions (the summed negative log-likelihood, in nats, of
each token after the window's first given those before it); then the same strided (windows every
STRIDE tokens, each scoring only the tokens no earlier window scored), from log_softmax of the
logits. The fixtures' weights stay as they are.
"""
import json, math, os
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "ChimeraTests", "Fixtures")
NAMES = ["lm-llama", "lm-qwen2", "lm-gemma", "lm-phi", "lm-stablelm-a", "lm-stablelm-b", "lm-llama-llama3", "lm-qwen2-yarn", "lm-phi-linear", "lm-llama-dynamic"]
WINDOW = 16
STRIDE = 6  # the strided evaluation of transformers' "Perplexity of fixed-length models" guide
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
        # Strided: windows of WINDOW tokens starting every STRIDE tokens, each scoring only the
        # tokens the previous windows did not (the rest is context), until one reaches the end.
        strided, previous_end = [], 0
        with torch.no_grad():
            for begin in range(0, len(ids), STRIDE):
                end = min(begin + WINDOW, len(ids))
                first_scored = max(1, previous_end - begin)  # window position of the first token scored
                logits = model(input_ids=torch.tensor([ids[begin:end]])).logits[0].double()
                logp = torch.log_softmax(logits, dim=-1)
                positions = range(first_scored, end - begin)
                sum_nll = -sum(logp[p - 1, ids[begin + p]].item() for p in positions)
                strided.append({"start": begin, "first_scored": first_scored, "predictions": len(positions), "nll_sum": sum_nll})
                previous_end = end
                if end == len(ids):
                    break
        strided_predictions = sum(w["predictions"] for w in strided)
        strided_nll = sum(w["nll_sum"] for w in strided)
        reference = {"text": TEXT, "window": WINDOW, "input_ids": ids, "windows": windows,
                     "predictions": predictions, "mean_nll": nll / predictions, "perplexity": math.exp(nll / predictions),
                     "stride": STRIDE, "strided_windows": strided, "strided_predictions": strided_predictions,
                     "strided_perplexity": math.exp(strided_nll / strided_predictions)}
        with open(os.path.join(folder, "reference_perplexity.json"), "w") as f:
            json.dump(reference, f, indent=1)
        print(name, len(ids), "tokens,", len(windows), "windows, perplexity", reference["perplexity"])


if __name__ == "__main__":
    main()
