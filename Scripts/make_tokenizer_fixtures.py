#!/usr/bin/env python3
"""Generate golden fixtures for the ChimeraTokenizers Swift tests.

Trains five small tokenizers with the Hugging Face `tokenizers` library (dev-time
only), saves them as tokenizer.json files and records reference encodings and
decodings in `<name>.cases.json`. The Swift tests only read the committed files.

Usage: python3 Scripts/make_tokenizer_fixtures.py [output_dir] [name ...]
(default output_dir: Tests/ChimeraTokenizersTests/Fixtures; names: only those tokenizers)
"""
import json
import os
import sys

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models,
                        normalizers, pre_tokenizers, processors, trainers)

CORPUS = """The quick brown fox jumps over the lazy dog. It's a sunny day, isn't it?
We'll see what they've done; I'd say they're ready. You're right, I'm sure.
Machine learning models run on the CPU when no GPU is available.
Tokenizers split text into pieces, then map each piece to an integer id.
In 2024 there were 12345 downloads, 678 stars and 9 forks: 3.14159 * 2 = 6.28318.
Le café est délicieux ; la crème brûlée aussi. Où est la bibliothèque ? Très bien, merci !
Il était une fois une fille naïve qui aimait l'été à Noël. Ça va ? Ça va très bien.
Übermäßig schöne Grüße aus München. Das Mädchen läuft über die Straße.
你好世界。今天天气很好。我们一起学习机器学习。你好，你好吗？
こんにちは世界。東京は大きい都市です。ありがとうございます。
I love it 🙂 and it's great 👍 — really! 🎉🎉 Done ✅.
def add(a, b):
    return a + b

for i in range(10):
    print(f"value = {i}")  # comment

if (x > 0 && y < 10) { return x * y; } else { return -1; }
{"name": "chimera", "version": "1.0.0", "tags": ["cpu", "swift"]}

Multiple   spaces   here, and	tabs	there.
Line one
Line two

Paragraph three after a blank line.
THE END. the end. The End.
"""

# Repeat the corpus so that frequent pairs are learnt; the vocab stays tiny.
TRAIN = [line for line in CORPUS.split("\n")] * 3

LONG = ("Chimera runs small multimodal models on the CPU. It loads weights, "
        "tokenizes the prompt, encodes images and generates text token by token. "
        "Le modèle répond en français, 中文也可以, and even emoji 🚀✨. "
        "Numbers like 3.14159 and 2024-05-17 appear too.\n\nA second paragraph "
        "with\ttabs and    runs of spaces ends here.")

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "multiple   spaces    inside",
    "line one\nline two",
    "paragraph\n\nnext paragraph\n",
    "\n\nstarts with newlines",
    "tabs\tand\ttabs\t\t",
    "digits 12345 and 3.14159 and 2024",
    "café naïve élève Noël",
    "你好世界",
    "emoji 🙂👍🏽 mix 🎉",
    "rare ǅ Ꙭ ߷ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and ☃",
    "Look <image> here</s>more",
    "<s>already has bos",
    "<image><image> twice",
    "special <|endoftext|> mid <|im_start|>user\nhi<|im_end|>",
    "pad <pad> token and <mask> token",
    "",
    " ",
    "def f(x):\n    return x ** 2  # square\n",
    "It's they're we've I'd you'll IT'S",
    "Zoë's über-naïve façade – “quoted” text…",
    "e\u0301 combining accent vs é",
    LONG,
]


def byte_fallback_vocab(tok_json):
    """Insert <0x00>..<0xFF> right after the special tokens, as Llama does.

    The BPE trainer does not create byte-fallback tokens, so we rebuild the vocab:
    specials keep their ids, then the 256 byte tokens, then the learnt tokens.
    Merges refer to token strings, so they stay valid.
    """
    model = tok_json["model"]
    vocab = model["vocab"]
    specials = [t["content"] for t in sorted(tok_json["added_tokens"], key=lambda t: t["id"])]
    learnt = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in specials]
    new_vocab = {}
    for t in specials:
        new_vocab[t] = len(new_vocab)
    for b in range(256):
        new_vocab["<0x%02X>" % b] = len(new_vocab)
    for t in learnt:
        if t not in new_vocab:
            new_vocab[t] = len(new_vocab)
    model["vocab"] = new_vocab
    for t in tok_json["added_tokens"]:
        t["id"] = new_vocab[t["content"]]
    return tok_json


def common_characters_only(lines, keep=90):
    """Drop rare characters from the training text so they fall back to <0xNN> bytes.

    (BpeTrainer's limit_alphabet breaks frequency ties in hash order, which made the
    output differ between runs; this keeps the fixtures reproducible.)
    """
    counts = {}
    for line in lines:
        for ch in line:
            counts[ch] = counts.get(ch, 0) + 1
    alphabet = set(sorted(counts, key=lambda ch: (-counts[ch], ch))[:keep])
    return ["".join(ch for ch in line if ch in alphabet) for line in lines]


def llama_tokenizer(legacy):
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    # Train with word splitting so merges never cross "▁" word boundaries.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False)
    tok.train_from_iterator(common_characters_only(TRAIN), trainer)
    data = byte_fallback_vocab(json.loads(tok.to_str()))
    tok = Tokenizer.from_str(json.dumps(data))
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.pre_tokenizer = None
    else:
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tok.add_special_tokens([AddedToken("<image>", special=True, normalized=False)])
    tok.add_tokens(["<pad>"])
    return tok


def gpt2_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_tokens([AddedToken("<image>", special=False)])
    # lstrip: the token swallows the whitespace before it (like RoBERTa's <mask>).
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    return tok


QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def qwen2_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Whole words put in the vocab without the merges that would build them: with ignore_merges a word
# in the vocab is taken whole before any merge (Llama 3's tokenizer.json sets it).
LLAMA3_WHOLE_WORDS = ["Hello", "Ġworld", "Ġquick", "Ġlazy", "Ġ12", "ĠDON", "Ġthere"]
# Texts for the digit groups, case-insensitive contractions and whole words.
LLAMA3_TEXTS = ["1234567 89 0", "DON'T It'S we'RE", "Hello world there", "x\r\n\r\ny  z",
                "<|begin_of_text|>hi<|eot_id|>"]


def llama3_tokenizer():
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for word in LLAMA3_WHOLE_WORDS:
        vocab.setdefault(word, len(vocab) + len(data["added_tokens"]))
    tok = Tokenizer.from_str(json.dumps(data))
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                                       special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    return tok


def merges_as_strings(path):
    """Store merges as "a b" strings (older tokenizer.json layout) to cover both forms."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    data["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "Tests/ChimeraTokenizersTests/Fixtures"
    only = set(sys.argv[2:])
    os.makedirs(out, exist_ok=True)
    builders = {
        "llama_style": lambda: llama_tokenizer(legacy=False),
        "llama_legacy": lambda: llama_tokenizer(legacy=True),
        "gpt2_style": gpt2_tokenizer,
        "qwen2_style": qwen2_tokenizer,
        "llama3_style": llama3_tokenizer,
    }
    for name, build in builders.items():
        if only and name not in only:
            continue
        tok = build()
        path = os.path.join(out, name + ".json")
        tok.save(path, pretty=False)
        if name == "gpt2_style":
            merges_as_strings(path)
        tok = Tokenizer.from_file(path)  # reference results come from the saved file
        cases = []
        for text in TEXTS + (LLAMA3_TEXTS if name == "llama3_style" else []):
            ids = tok.encode(text, add_special_tokens=True).ids
            cases.append({
                "text": text,
                "ids": ids,
                "ids_no_special": tok.encode(text, add_special_tokens=False).ids,
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip": tok.decode(ids, skip_special_tokens=True),
            })
        with open(os.path.join(out, name + ".cases.json"), "w", encoding="utf-8") as f:
            json.dump(cases, f, ensure_ascii=False, indent=1)
        print(f"{name}: vocab {tok.get_vocab_size()}, {len(cases)} cases")


if __name__ == "__main__":
    main()
