#!/usr/bin/env python3
"""Weights, samples and reference outputs for the plugins under Plugins/ (dev time only).

Sensor encoder: random weights in the WhisperEncoderLayer layout; the reference is computed with
transformers' WhisperEncoderLayer modules on the bundled sample CSV, after the plugin's documented
normalization (per channel: (x - mean) / sqrt(var + eps), population variance; zero padding).

Audio encoder: a tiny random WhisperEncoder (d_model 32, 2 layers, 4 heads, 80 mels). The real
Whisper works on 30 s chunks (3000 frames, max_source_positions 1500); this fixture shrinks the
chunk to 2 s consistently: WhisperFeatureExtractor(chunk_length=2) gives 200 frames and the encoder
has max_source_positions 100. Inputs shorter than the chunk are zero-padded at the end (Whisper's
padding="max_length"); the fixture has a 1.3 s clip. embed_positions is left out of the saved
weights: the plugin computes Whisper's sinusoids itself (the script asserts the model holds them).
"""
import json
import math
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder, WhisperEncoderLayer, sinusoids

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "Tests/ChimeraTests/Fixtures/plugins"
torch.manual_seed(0)
np.random.seed(0)


def rounded(a):
    return [float(f"{v:.7g}") for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def sensor():
    out = ROOT / "Plugins/SensorEncoder/manifests"
    channels, window, patch, hidden, layers, heads, inter = ["temperature", "humidity", "vibration"], 64, 8, 32, 2, 4, 64
    cfg = WhisperConfig(d_model=hidden, encoder_attention_heads=heads, encoder_ffn_dim=inter, activation_function="gelu")
    cfg._attn_implementation = "eager"
    blocks = [WhisperEncoderLayer(cfg).eval() for _ in range(layers)]
    patch_embedding = torch.nn.Linear(patch * len(channels), hidden)
    positions = torch.randn(window // patch, hidden) * 0.1
    final = torch.nn.LayerNorm(hidden, eps=1e-5)
    with torch.no_grad():
        for m in [final] + [b.self_attn_layer_norm for b in blocks] + [b.final_layer_norm for b in blocks]:
            m.weight.uniform_(0.8, 1.2); m.bias.uniform_(-0.1, 0.1)
    tensors = {"patch_embedding.weight": patch_embedding.weight, "patch_embedding.bias": patch_embedding.bias,
               "embed_positions.weight": positions, "layer_norm.weight": final.weight, "layer_norm.bias": final.bias}
    for i, b in enumerate(blocks):
        for k, v in b.state_dict().items():
            tensors[f"layers.{i}.{k}"] = v
    save_file({k: v.detach().contiguous().float() for k, v in tensors.items()}, str(out / "weights/sensor-tiny.safetensors"))

    # A sample recording shorter than the window (50 of 64 readings): a daily cycle, drift, bursts.
    t = np.arange(50)
    rows = np.stack([21 + 3 * np.sin(t / 8) + 0.05 * t, 55 - 10 * np.cos(t / 10), np.abs(np.sin(t * 1.7)) * (t % 7 == 0) + 0.01 * t], 1)
    rows = np.round(rows, 3)
    with open(out / "sample.csv", "w") as f:
        f.write(",".join(channels) + "\n")
        for r in rows:
            f.write(",".join(f"{v:.3f}" for v in r) + "\n")
    x = rows.astype(np.float32)
    mean, var = x.mean(0), x.var(0)
    x = (x - mean) / np.sqrt(var + 1e-5)
    x = np.concatenate([x, np.zeros((window - len(x), len(channels)), np.float32)])
    with torch.no_grad():
        h = patch_embedding(torch.from_numpy(x).reshape(window // patch, -1)) + positions
        states = [h]
        for b in blocks:
            h = b(h[None], attention_mask=None)
            h = (h[0] if isinstance(h, tuple) else h)[0]
            states.append(h)
        states[-1] = final(states[-1])
    json.dump({"input": rounded(x), "hidden_1": rounded(states[1]), "last": rounded(states[-1]), "tokens": window // patch, "width": hidden},
              open(FIXTURES / "sensor_reference.json", "w"))


def write_wav(path, samples, rate=16000, channels=1):
    data = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE")
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16))
        f.write(b"data" + struct.pack("<I", len(data)) + data)


def audio():
    out = ROOT / "Plugins/AudioEncoder/manifests"
    chunk, mels = 2, 80
    cfg = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, num_mel_bins=mels,
                        max_source_positions=chunk * 50, activation_function="gelu")
    cfg._attn_implementation = "eager"
    enc = WhisperEncoder(cfg).eval()
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "embed_positions" not in name:
                p.normal_(0, 0.2) if p.dim() > 1 else p.uniform_(-0.1, 0.1)
        for m in enc.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.8, 1.2)
        enc.embed_positions.weight.copy_(sinusoids(*enc.embed_positions.weight.shape))
    state = {k: v.contiguous().float() for k, v in enc.state_dict().items() if k != "embed_positions.weight"}
    projector = torch.nn.Linear(32, 48)
    state.update({"projector.linear.weight": projector.weight.detach(), "projector.linear.bias": projector.bias.detach()})
    save_file(state, str(out / "weights/whisper-tiny-random.safetensors"))

    rate = 16000
    t = np.arange(int(1.3 * rate)) / rate
    clip = 0.4 * np.sin(2 * np.pi * 440 * t) * np.exp(-t) + 0.2 * np.sin(2 * np.pi * 1250 * t) * (t > 0.5) + 0.02 * np.random.randn(len(t))
    write_wav(out / "sample.wav", clip)
    pcm = np.frombuffer((np.clip(clip, -1, 1) * 32767).astype("<i2").tobytes(), "<i2").astype(np.float32) / 32768.0

    fe = WhisperFeatureExtractor(feature_size=mels, chunk_length=chunk)
    feats = fe(pcm, sampling_rate=rate, return_tensors="np").input_features[0]
    with torch.no_grad():
        o = enc(torch.from_numpy(feats)[None], output_hidden_states=True)
        last = o.last_hidden_state[0]
        pooled = torch.nn.functional.avg_pool1d(last.T[None], 2, 2)[0].T
        projected = projector(pooled)
    json.dump({"frames": int(feats.shape[1]), "mels": mels, "features": rounded(feats), "last": rounded(last),
               "hidden_1": rounded(o.hidden_states[1][0]), "projected": rounded(projected)},
              open(FIXTURES / "audio_reference.json", "w"))
    # A 44.1 kHz file, which the plugin refuses (it does not resample).
    write_wav(FIXTURES / "tone-44k.wav", 0.1 * np.sin(2 * np.pi * 440 * np.arange(4410) / 44100), rate=44100)


def audio_128_mels():
    """A 128-mel variant (Whisper large-v3's feature size), test-only: d_model 8, one layer."""
    out = FIXTURES / "whisper128"
    out.mkdir(exist_ok=True)
    cfg = WhisperConfig(d_model=8, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=16, num_mel_bins=128,
                        max_source_positions=100, activation_function="gelu")
    cfg._attn_implementation = "eager"
    enc = WhisperEncoder(cfg).eval()
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "embed_positions" not in name:
                p.normal_(0, 0.3) if p.dim() > 1 else p.uniform_(-0.1, 0.1)
        enc.embed_positions.weight.copy_(sinusoids(*enc.embed_positions.weight.shape))
    save_file({k: v.contiguous().float() for k, v in enc.state_dict().items() if k != "embed_positions.weight"}, str(out / "whisper128.safetensors"))
    manifest = {"schema": "chimera.component/v1", "id": "whisper128-test", "kind": "encoder", "modality": "audio", "family": "whisper-encoder",
                "config": {"num_mel_bins": 128, "d_model": 8, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 16,
                           "max_source_positions": 100, "chunk_length": 2},
                "output": {"width": 8, "tokens": 100}, "weights": {"files": ["whisper128.safetensors"]}}
    json.dump(manifest, open(out / "whisper128.component.json", "w"), indent=2)
    raw = open(ROOT / "Plugins/AudioEncoder/manifests/sample.wav", "rb").read()[44:]
    pcm = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    feats = WhisperFeatureExtractor(feature_size=128, chunk_length=2)(pcm, sampling_rate=16000, return_tensors="np").input_features[0]
    with torch.no_grad():
        last = enc(torch.from_numpy(feats)[None]).last_hidden_state[0]
    json.dump({"features_first_20_frames": rounded(feats[:, :20]), "last": rounded(last)}, open(out / "reference.json", "w"))


if __name__ == "__main__":
    FIXTURES.mkdir(parents=True, exist_ok=True)
    sensor()
    audio()
    audio_128_mels()
