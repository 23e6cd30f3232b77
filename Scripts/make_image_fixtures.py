#!/usr/bin/env python3
"""Generates the ChimeraIO image fixtures (Tests/ChimeraIOTests/Fixtures/images).

Dev-time only (Python 3.11, transformers 5.x, Pillow, numpy); the Swift tests read the
committed outputs. Reference tensors come from transformers' PIL-backend ("slow") processors:
CLIPImageProcessorPil / SiglipImageProcessorPil (named CLIPImageProcessor / SiglipImageProcessor
before transformers 5), and TinyLLaVA's expand2square for the "pad" path.

Usage: python3 Scripts/make_image_fixtures.py [output_dir]
       python3 Scripts/make_image_fixtures.py --sample manifests/default/sample.png
"""
import io
import json
import os
import sys

import numpy as np
from PIL import Image

from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil



def make_sample(path, w=64, h=48):
    """A small synthetic landscape (sky gradient, sun, hills, house, tree) for demos."""
    from PIL import ImageDraw, ImageFilter
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    sky = np.stack([110 + 90 * y / h, 160 + 60 * y / h, 235 - 20 * y / h], -1)
    img = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse((44, 5, 56, 17), fill=(255, 226, 120))
    d.polygon([(0, 34), (14, 26), (30, 31), (46, 24), (64, 30), (64, 48), (0, 48)], fill=(70, 140, 60))
    d.polygon([(0, 40), (20, 35), (40, 39), (64, 36), (64, 48), (0, 48)], fill=(50, 115, 45))
    d.rectangle((14, 30, 28, 41), fill=(200, 170, 130))
    d.polygon([(12, 30), (21, 22), (30, 30)], fill=(160, 50, 40))
    d.rectangle((19, 35, 23, 41), fill=(90, 60, 40))
    d.rectangle((25, 32, 27, 34), fill=(170, 210, 240))
    d.rectangle((48, 30, 50, 40), fill=(100, 70, 40))
    d.ellipse((43, 21, 55, 33), fill=(40, 100, 40))
    img = img.filter(ImageFilter.SMOOTH)
    noise = np.random.default_rng(7).normal(0, 3, (h, w, 3))
    img = Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8), "RGB")
    img.save(path, optimize=True)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if len(sys.argv) > 2 and sys.argv[1] == "--sample":
    make_sample(sys.argv[2])
    sys.exit(0)

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "ChimeraIOTests", "Fixtures", "images")
os.makedirs(OUT, exist_ok=True)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def synth_rgb(w, h, seed):
    """Gradients, hard edges, a disc and some noise: exercises ringing/clipping in bicubic."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / (w - 1)
    g = 255 * y / (h - 1)
    b = 127.5 + 127.5 * np.sin(x / 3.0) * np.cos(y / 5.0)
    img = np.stack([r, g, b], -1)
    img[(x > w * 0.6) & (y < h * 0.4)] = [250, 10, 30]            # saturated block
    disc = (x - w * 0.3) ** 2 + (y - h * 0.65) ** 2 < (min(w, h) * 0.2) ** 2
    img[disc] = [0, 0, 0]
    img[::7, :] = 255                                                # thin white lines
    img += rng.normal(0, 12, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def procedural(w, h):
    """Same formula as `proceduralImage` in the Swift tests (no stored pixels needed)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * 7 + y * 3) % 256
    g = ((x * y) // 5) % 256
    b = np.where(((x // 16) + (y // 16)) % 2 == 0, 235, 20)
    return np.stack([r, g, b], -1).astype(np.uint8)


def save(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def png_bytes(img, **kw):
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- source images
images = {}
rgb = Image.fromarray(synth_rgb(61, 45, 1), "RGB")
images["rgb_61x45.png"] = png_bytes(rgb)
grey = Image.fromarray(synth_rgb(37, 50, 2)[..., 1], "L")                      # portrait, grey
images["grey_37x50.png"] = png_bytes(grey)
rgba_arr = np.concatenate([synth_rgb(40, 30, 3),
                           np.fromfunction(lambda y, x: (x * 255 / 39 + (y % 3) * 7) % 256, (30, 40))
                           .astype(np.uint8)[..., None]], -1)
rgba_arr[0:5, 0:5, 3] = 0                                                      # fully transparent corner
images["rgba_40x30.png"] = png_bytes(Image.fromarray(rgba_arr, "RGBA"))
la = Image.fromarray(np.stack([synth_rgb(23, 17, 4)[..., 0],
                               np.linspace(0, 255, 23 * 17).reshape(17, 23).astype(np.uint8)], -1), "LA")
images["la_23x17.png"] = png_bytes(la)
pal = rgb.resize((29, 19), Image.NEAREST).quantize(colors=16)
images["palette_29x19.png"] = png_bytes(pal)
pal_t = pal.copy()
pal_t.info["transparency"] = 3                                                 # tRNS on palette index 3
images["palette_trns_29x19.png"] = png_bytes(pal_t, transparency=3)
bw = Image.fromarray((synth_rgb(19, 13, 5)[..., 0] > 128).astype(np.uint8) * 255, "L").convert("1")
images["bilevel_19x13.png"] = png_bytes(bw)
buf = io.BytesIO()
Image.fromarray(synth_rgb(64, 40, 6), "RGB").save(buf, format="JPEG", quality=90)  # 4:2:0
images["photo_64x40.jpg"] = buf.getvalue()
buf = io.BytesIO()
Image.fromarray(synth_rgb(30, 44, 7)[..., 2], "L").save(buf, format="JPEG", quality=85)
images["grey_30x44.jpg"] = buf.getvalue()
buf = io.BytesIO()
Image.fromarray(synth_rgb(48, 36, 8), "RGB").save(buf, format="JPEG", quality=80, progressive=True, subsampling=0)
images["progressive_48x36.jpg"] = buf.getvalue()
for name, data in images.items():
    save(name, data)
# 16-bit grey: decoded by libpng with png_set_strip_16 (high byte). Pillow opens it as I;16 and
# its convert("RGB") clips instead, so this one is checked against v >> 8, not against PIL.
g16 = (np.arange(8 * 4, dtype=np.uint16).reshape(4, 8) * 2111 + 7).astype(np.uint16)
save("grey16_8x4.png", png_bytes(Image.fromarray(g16)))
save("grey16_8x4.png.expected.u8", np.repeat((g16 >> 8).astype(np.uint8)[..., None], 3, -1).tobytes())

# ---------------------------------------------------------------- error fixtures
png = images["rgb_61x45.png"]
save("err_truncated.png", png[: len(png) // 2])
save("err_garbage.png", bytes(range(7, 71)) * 3)
save("err_empty.png", b"")
save("err_gif.png", b"GIF89a" + b"\x00" * 30)
jpg = images["photo_64x40.jpg"]
save("err_truncated.jpg", jpg[: len(jpg) * 2 // 3])
bad = bytearray(jpg)
sof = bad.find(b"\xff\xc0")
bad[sof + 4] = 3                                                               # data precision 3 bits
save("err_corrupt.jpg", bytes(bad))
crc = bytearray(png)
ihdr = crc.find(b"IHDR")
crc[ihdr + 5] ^= 0x55                                                           # IHDR width byte, CRC now wrong
save("err_crc.png", bytes(crc))

# ---------------------------------------------------------------- decoded references
decoded = []
for name in images:
    im = Image.open(os.path.join(OUT, name))
    im.load()
    rgb_arr = np.asarray(im.convert("RGB"))
    has_alpha = "A" in im.getbands() or im.info.get("transparency") is not None
    entry = {"image": name, "width": im.width, "height": im.height, "mode": im.mode,
             "rgb": name + ".rgb.u8", "alpha": None}
    save(entry["rgb"], rgb_arr.tobytes())
    if has_alpha:
        entry["alpha"] = name + ".alpha.u8"
        save(entry["alpha"], np.asarray(im.convert("RGBA"))[..., 3].tobytes())
        white = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
        entry["composited"] = name + ".white.u8"
        save(entry["composited"], np.asarray(white.convert("RGB")).tobytes())
    decoded.append(entry)


# ---------------------------------------------------------------- processor references
def expand2square(pil_img, background_color):  # TinyLLaVA / LLaVA
    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


def clip(size, crop):
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": crop, "width": crop})


def siglip(size):
    return SiglipImageProcessorPil(size={"height": size, "width": size})


def manifest(proc, pad=False):
    d = proc.to_dict()
    s = d["size"]
    m = {"resize": "shortest_edge" if "shortest_edge" in s else "exact",
         "size": s.get("shortest_edge", s.get("height")),
         "mean": list(d["image_mean"]), "std": list(d["image_std"]), "pad_to_square": pad}
    if d.get("do_center_crop"):
        m["crop_size"] = d["crop_size"]["height"]
    return m


cases = []


def add_case(name, image, proc, pad=False, composite=False, hf_config=False):
    """composite=True: processor sees the PIL image as opened (transformers composites alpha on
    white). Otherwise it sees `Image.open(f).convert("RGB")` as LLaVA-style loaders do."""
    im = Image.open(os.path.join(OUT, image))
    if not composite:
        im = im.convert("RGB")
    if pad:
        im = expand2square(im, tuple(int(x * 255) for x in proc.image_mean))
    pv = proc(images=im, return_tensors="np")["pixel_values"][0].astype("<f4")
    case = {"name": name, "image": image, "preprocess": manifest(proc, pad), "composite_alpha": composite,
            "shape": list(pv.shape), "values": name + ".f32"}
    save(case["values"], pv.tobytes())
    if hf_config:
        case["hf_config"] = name + ".preprocessor_config.json"
        save(case["hf_config"], proc.to_json_string().encode())
    cases.append(case)


add_case("clip24_rgb", "rgb_61x45.png", clip(24, 24), hf_config=True)            # downscale
add_case("clip64_crop56_rgb", "rgb_61x45.png", clip(64, 56))                     # upscale
add_case("clip24_crop30_rgb", "rgb_61x45.png", clip(24, 30))                     # crop larger than image: zero pad
add_case("clip24_grey", "grey_37x50.png", clip(24, 24))
add_case("clip24_rgba_white", "rgba_40x30.png", clip(24, 24), composite=True)
add_case("clip24_la_white", "la_23x17.png", clip(24, 24), composite=True)
add_case("clip16_palette_trns_white", "palette_trns_29x19.png", clip(16, 16), composite=True)
add_case("clip16_palette", "palette_29x19.png", clip(16, 16))
add_case("clip16_bilevel", "bilevel_19x13.png", clip(16, 16))
add_case("clip24_jpeg", "photo_64x40.jpg", clip(24, 24))
add_case("siglip20_rgb", "rgb_61x45.png", siglip(20), hf_config=True)
add_case("siglip20_jpeg", "photo_64x40.jpg", siglip(20))
add_case("siglip40_grey_jpeg", "grey_30x44.jpg", siglip(40))                       # upscale both axes
add_case("siglip20_progressive", "progressive_48x36.jpg", siglip(20))
add_case("tinyllava_pad_clip24_rgb", "rgb_61x45.png", clip(24, 24), pad=True)     # landscape: pad top/bottom
add_case("tinyllava_pad_clip24_grey", "grey_37x50.png", clip(24, 24), pad=True)   # portrait: pad left/right
add_case("tinyllava_pad_clip24_rgba", "rgba_40x30.png", clip(24, 24), pad=True)   # alpha dropped by convert("RGB")
add_case("tinyllava_pad_siglip20_jpeg", "photo_64x40.jpg", siglip(20), pad=True)

# Large procedural images (pixels regenerated in Swift): check the prepared uint8 image only.
procedural_cases = []
for (w, h, proc, name) in [(1000, 800, clip(64, 64), "proc_1000x800_clip64"),
                           (733, 1001, siglip(40), "proc_733x1001_siglip40"),
                           (500, 371, clip(336, 336), "proc_500x371_clip336_crop")]:
    pil = Image.fromarray(procedural(w, h), "RGB")
    m = manifest(proc)
    sw, sh = (w, h)
    if m["resize"] == "exact":
        tw, th = m["size"], m["size"]
    else:
        short, long = (w, h) if w <= h else (h, w)
        nl = int(m["size"] * long / short)
        th, tw = (nl, m["size"]) if w <= h else (m["size"], nl)
    res = np.asarray(pil.resize((tw, th), resample=Image.BICUBIC))
    if "crop_size" in m:
        c = m["crop_size"]
        top, left = (th - c) // 2, (tw - c) // 2
        res = res[top:top + c, left:left + c]
    # cross-check against the processor itself (undo normalisation)
    pv = proc(images=pil, return_tensors="np")["pixel_values"][0]
    mean = np.array(m["mean"], np.float32)[:, None, None]
    std = np.array(m["std"], np.float32)[:, None, None]
    back = np.round((pv * std + mean) * 255).astype(np.int64).transpose(1, 2, 0)
    assert np.array_equal(back, res), name
    if res.size > 40000:  # keep fixtures small: store a checksum of the big one instead
        procedural_cases.append({"name": name, "width": w, "height": h, "preprocess": m,
                                 "prepared_shape": list(res.shape),
                                 "prepared_sum": int(res.astype(np.int64).sum()),
                                 "prepared_weighted_sum": int((res.astype(np.int64).ravel() *
                                                               (np.arange(res.size) % 251 + 1)).sum()),
                                 "prepared": None})
    else:
        save(name + ".prepared.u8", res.tobytes())
        procedural_cases.append({"name": name, "width": w, "height": h, "preprocess": m,
                                 "prepared_shape": list(res.shape), "prepared": name + ".prepared.u8"})

# Resize-order grid: Pillow >= 13 runs the vertical pass first when the height shrinks by more
# than twice as many pixels as the width (python-pillow/Pillow#9549); the pass order changes
# the uint8 rounding. Random size pairs (half of them in the vertical-first regime), PIL output
# of the procedural image, all concatenated into one file.
grid_rng = np.random.default_rng(2024)
grid, blobs, offset = [], [], 0
while len(grid) < 36:
    W, H = (int(v) for v in grid_rng.integers(8, 90, 2))
    w, h = (int(v) for v in grid_rng.integers(3, 28, 2))
    vertical_first = h < H and (H - h) > 2 * (W - w) and w != W
    if sum(g["vertical_first"] for g in grid) >= 18 and vertical_first:
        continue
    if sum(not g["vertical_first"] for g in grid) >= 18 and not vertical_first:
        continue
    out = np.asarray(Image.fromarray(procedural(W, H), "RGB").resize((w, h), Image.BICUBIC))
    grid.append({"width": W, "height": H, "out_width": w, "out_height": h,
                 "vertical_first": bool(vertical_first), "offset": offset})
    blobs.append(out.tobytes())
    offset += out.size
save("resize_grid.u8", b"".join(blobs))

with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump({"decoded": decoded, "cases": cases, "procedural": procedural_cases, "resize_grid": grid}, f, indent=1)

total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
print(f"wrote {len(os.listdir(OUT))} files, {total} bytes to {OUT}")
