#!/usr/bin/env python3
"""Side-by-side CPU benchmark: Chimera (`chimera bench --synthetic`) against llama.cpp
(llama-cpp-python + gguf, random weights written as GGUF) and PyTorch/transformers (eager), on the
same shapes with random weights. Dev-time only: none of these packages is a dependency of Chimera.

    swift build -c release --product chimera
    python3 Scripts/bench_compare.py [--threads 2] [--prompt 640] [--decode 32] [--only chimera,torch,llamacpp]
        [--dtypes f16,q8_0,q4_0] [--no-vision | --no-llm] [--kv-cache f32|f16] [--rounds 3]

Prints one JSON line per measurement on stderr and a Markdown table (with the machine) on stdout.
Missing engines (llama_cpp not installed, a Chimera family not yet available) are reported as such.

With --rounds N every measurement is repeated N times, the engines of a row group back to back and
in alternating order (Chimera first in odd rounds, last in even ones), since on a shared machine the
bandwidth and the compute available move by tens of percent from minute to minute: the table gives
each figure's median over the rounds, and the note column how many rounds Chimera was ahead in
(each round's engines ran within a minute of each other) and the range of its decode share.
"""
import argparse, json, os, platform, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHIMERA = os.path.join(ROOT, ".build", "release", "chimera")

# Same dimensions as the presets in Sources/Chimera/Benchmark.swift.
LLMS = {
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000, rope_theta=10000.0, rms_norm_eps=1e-5),
    # Qwen2: q/k/v biases and tied embeddings (GGUF architecture "qwen2", transformers Qwen2ForCausalLM).
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=True),
}
ARCH = {"tinyllama-1.1b": "llama", "qwen2-0.5b": "qwen2"}
VISION = {
    "clip-vit-l-336": ("clip", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                                    image_size=336, patch_size=14, hidden_act="quick_gelu")),
    # No attention-pooling head: TinyLLaVA (and Chimera's encoder) use the hidden states, so both
    # engines do the same work (the head would add about 0.6 % to PyTorch's time).
    "siglip-so400m-384": ("siglip", dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16, intermediate_size=4304,
                                         image_size=384, patch_size=14, vision_use_head=False)),
}


def log(record):
    print(json.dumps(record), file=sys.stderr, flush=True)


def machine():
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        flags = open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0]
    except OSError:
        flags = ""
    features = [f for f in ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"] if f" {f}" in flags]
    return f"{model or platform.processor()}, {os.cpu_count()} cores, {' '.join(features)}"


# MARK: - Chimera

def chimera(preset, dtype, args):
    cmd = [CHIMERA, "bench", "--synthetic", preset, "--dtype", dtype, "--threads", str(args.threads),
           "--prompt-tokens", str(args.prompt), "--decode-tokens", str(args.decode),
           "--encode-runs", str(args.encode_runs), "--kv-cache", args.kv_cache]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        return {"error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}"}
    r = json.loads(run.stdout)
    return {"prefill": r.get("prefill_tokens_per_s"), "decode": r.get("decode_tokens_per_s"),
            "encode_s": r.get("image_encode_s"), "rss_ratio": r.get("peak_rss_ratio"),
            "decode_gbps": r.get("decode_bandwidth_gb_per_s"), "read_gbps": r.get("read_bandwidth_gb_per_s"),
            "share": r.get("decode_bandwidth_fraction")}


# MARK: - PyTorch

def torch_llm(preset, dtype, args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    Config, Model = (Qwen2Config, Qwen2ForCausalLM) if ARCH[preset] == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    config = Config(**LLMS[preset], max_position_embeddings=2048)
    model = Model(config).to({"f32": torch.float32, "bf16": torch.bfloat16}[dtype]).eval()
    ids = torch.randint(0, config.vocab_size, (1, args.prompt))
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(ids, use_cache=True)
        prefill = time.perf_counter() - start
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(args.decode):
            out = model(token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        decode = time.perf_counter() - start
    return {"prefill": args.prompt / prefill, "decode": args.decode / decode}


def torch_vision(preset, args):
    import torch
    torch.set_num_threads(args.threads)
    kind, dims = VISION[preset]
    if kind == "clip":
        from transformers import CLIPVisionConfig as C, CLIPVisionModel as M
    else:
        from transformers import SiglipVisionConfig as C, SiglipVisionModel as M
    model = M(C(**dims)).eval()
    pixels = torch.randn(1, 3, dims["image_size"], dims["image_size"])
    times = []
    with torch.inference_mode():
        for _ in range(args.encode_runs):  # as Chimera's bench: the first apart, the median of the rest
            start = time.perf_counter()
            model(pixel_values=pixels)
            times.append(time.perf_counter() - start)
    warm = sorted(times[1:] or times)
    return {"encode_s": warm[len(warm) // 2]}


# MARK: - llama.cpp

def write_gguf(path, preset, dtype):
    """A llama-architecture GGUF with random weights (normal, std 0.02) and a placeholder vocabulary."""
    import numpy as np
    import gguf
    dims = LLMS[preset]
    h, ffn, layers, vocab = dims["hidden_size"], dims["intermediate_size"], dims["num_hidden_layers"], dims["vocab_size"]
    heads, kv = dims["num_attention_heads"], dims["num_key_value_heads"]
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
             "q4_0": gguf.GGMLQuantizationType.Q4_0}[dtype]
    arch = ARCH[preset]
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(2048); w.add_embedding_length(h); w.add_block_count(layers)
    w.add_feed_forward_length(ffn); w.add_head_count(heads); w.add_head_count_kv(kv)
    w.add_rope_dimension_count(h // heads); w.add_layer_norm_rms_eps(dims["rms_norm_eps"]); w.add_rope_freq_base(dims["rope_theta"])
    w.add_file_type({"f16": 1, "q8_0": 7, "q4_0": 2}[dtype])
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>".encode() for i in range(vocab)])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([1] * vocab)
    w.add_bos_token_id(1); w.add_eos_token_id(2)
    rng = np.random.default_rng(0)

    def tensor(name, shape, quantize=True):
        data = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
        if quantize and qtype != gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        elif quantize:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, data)

    tensor("token_embd.weight", (vocab, h))
    w.add_tensor("output_norm.weight", np.ones(h, dtype=np.float32))
    if not dims.get("tie_word_embeddings"):
        tensor("output.weight", (vocab, h))
    hd = h // heads
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(h, dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(h, dtype=np.float32))
        tensor(p + "attn_q.weight", (heads * hd, h)); tensor(p + "attn_k.weight", (kv * hd, h))
        tensor(p + "attn_v.weight", (kv * hd, h)); tensor(p + "attn_output.weight", (h, heads * hd))
        tensor(p + "ffn_gate.weight", (ffn, h)); tensor(p + "ffn_up.weight", (ffn, h)); tensor(p + "ffn_down.weight", (h, ffn))
        if arch == "qwen2":
            for name, width in (("attn_q", heads * hd), ("attn_k", kv * hd), ("attn_v", kv * hd)):
                w.add_tensor(p + name + ".bias", np.zeros(width, dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def llamacpp(preset, dtype, args):
    try:
        import llama_cpp  # noqa: F401
        import gguf  # noqa: F401
    except ImportError as e:
        return {"error": f"not installed ({e.name}); pip install llama-cpp-python gguf"}
    from llama_cpp import Llama
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{preset}-{dtype}.gguf")
        write_gguf(path, preset, dtype)
        llm = Llama(model_path=path, n_ctx=args.prompt + args.decode + 8, n_batch=args.prompt, n_ubatch=args.prompt,
                    n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
        tokens = [(i * 7919 + 1) % LLMS[preset]["vocab_size"] for i in range(args.prompt)]
        start = time.perf_counter()
        llm.eval(tokens)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(args.decode):
            llm.eval([(i * 31 + 5) % LLMS[preset]["vocab_size"]])
        decode = time.perf_counter() - start
        return {"prefill": args.prompt / prefill, "decode": args.decode / decode}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--prompt", type=int, default=640)
    parser.add_argument("--decode", type=int, default=32)
    # Five, not three: of two warm encodes the "median" is the slower one, a single stalled encode
    # (seconds of a busy neighbour) then decided a round; of four it takes two.
    parser.add_argument("--encode-runs", type=int, default=5, help="image encodes per engine: the median of all but the first is reported")
    parser.add_argument("--only", default="chimera,torch,llamacpp")
    parser.add_argument("--llm", default="tinyllama-1.1b", help=f"comma-separated: {', '.join(sorted(LLMS))}")
    parser.add_argument("--dtypes", default="f32,f16,bf16,q8_0,q4_0", help="language-model weight formats to run")
    parser.add_argument("--no-vision", action="store_true", help="skip the vision encoders")
    parser.add_argument("--vision-dtypes", default="f32",
                        help="Chimera's encoder weight formats (comma-separated; e.g. f32,q8_0: `chimera quantize --include-encoder`); "
                             "PyTorch runs f32 beside the f32 row")
    parser.add_argument("--kv-cache", default="f32", choices=["f32", "f16"],
                        help="Chimera's KV cache precision (llama.cpp keeps its cache in f16, PyTorch in the model's dtype)")
    parser.add_argument("--no-llm", action="store_true", help="only the vision encoders")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every measurement, engines alternating; medians reported")
    args = parser.parse_args()
    engines = set(args.only.split(","))
    results = {}  # (engine, model, dtype) -> one result per round, in table order

    def record(engine, model, dtype, result, rnd):
        log({"round": rnd + 1, "engine": engine, "model": model, "dtype": dtype, **result})
        results.setdefault((engine, model, dtype), []).append(result)

    def group(rnd, model, dtype, others):
        """Chimera and the engines it is compared with on one shape, Chimera first in odd rounds."""
        runs = [("chimera", lambda: chimera(model, dtype, args))] if "chimera" in engines else []
        runs += [(name, run) for name, run in others]
        for name, run in (runs if rnd % 2 == 0 else runs[::-1]):
            record(name, model, dtype, run(), rnd)

    for rnd in range(args.rounds):
        for llm in [] if args.no_llm else args.llm.split(","):
            for dtype in args.dtypes.split(","):
                others = []
                if "llamacpp" in engines and dtype in ("f16", "q8_0", "q4_0"):
                    others.append(("llama.cpp", lambda llm=llm, dtype=dtype: llamacpp(llm, dtype, args)))
                if "torch" in engines and dtype in ("f32", "bf16"):
                    others.append(("pytorch", lambda llm=llm, dtype=dtype: torch_llm(llm, dtype, args)))
                group(rnd, llm, dtype, others)
        for preset in ([] if args.no_vision else VISION):
            for dtype in args.vision_dtypes.split(","):
                torch_row = [("pytorch", lambda preset=preset: torch_vision(preset, args))] if "torch" in engines and dtype == "f32" else []
                group(rnd, preset, dtype, torch_row)

    def median(values):
        values = sorted(v for v in values if v is not None)
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    def combined(runs):
        keys = {k for r in runs for k in r if k != "error"}
        out = {k: median([r.get(k) for r in runs]) for k in keys}
        errors = sorted({r["error"] for r in runs if "error" in r})
        if errors:
            out["error"] = "; ".join(errors)
        return out

    def rounds_note(engine, model, dtype):
        """For Chimera's rows over several rounds: in how many rounds it was ahead, and its share's range."""
        if engine != "chimera" or args.rounds < 2:
            return ""
        mine, notes = results[(engine, model, dtype)], []
        for (other, m, d), theirs in results.items():
            if other == engine or (m, d) != (model, dtype):
                continue
            wins = []
            for key, label, better in (("prefill", "prefill", 1), ("decode", "decode", 1), ("encode_s", "encode", -1)):
                pairs = [(a.get(key), b.get(key)) for a, b in zip(mine, theirs) if a.get(key) and b.get(key)]
                if pairs:
                    wins.append(f"{label} {sum(1 for a, b in pairs if (a - b) * better > 0)}/{len(pairs)}")
            if wins:
                notes.append(f"ahead of {other} in rounds: " + ", ".join(wins))
        shares = [r["share"] for r in mine if r.get("share")]
        if shares:
            notes.append(f"share {100 * min(shares):.0f}–{100 * max(shares):.0f} %")
        return "; ".join(notes)

    fmt = lambda v, unit="": "—" if v is None else f"{v:.2f}{unit}"
    rounds = f"; the median of {args.rounds} rounds, engines alternating" if args.rounds > 1 else ""
    print(f"Machine: {machine()}; {args.threads} threads; prompt {args.prompt} tokens, decode {args.decode} tokens; "
          f"random weights; Chimera's KV cache {args.kv_cache}{rounds}.\n")
    print("| engine | model | weights | prefill tok/s | decode tok/s | decode GB/s | share of read bandwidth (probe GB/s) | image encode s | peak RSS ÷ (weights + KV) | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (engine, model, dtype), runs in results.items():
        r = combined(runs)
        # The share is Chimera's paired measurement (each probe of the read bandwidth followed by
        # one decoded token; the median of the pairs), not decode GB/s over the median probe.
        share = "—"
        if r.get("share") and r.get("read_gbps"):
            share = f"{100 * r['share']:.0f} % ({r['read_gbps']:.1f})"
        note = "; ".join(n for n in (r.get("error", ""), rounds_note(engine, model, dtype)) if n)
        print(f"| {engine} | {model} | {dtype} | {fmt(r.get('prefill'))} | {fmt(r.get('decode'))} | {fmt(r.get('decode_gbps'))} | {share} "
              f"| {fmt(r.get('encode_s'))} | {fmt(r.get('rss_ratio'))} | {note} |")


if __name__ == "__main__":
    main()
