#!/usr/bin/env python3
"""Generates the fixtures of images Pillow's `Image.open` alone does not show as they are meant
(Tests/ChimeraIOTests/Fixtures/images/load_image/).

Dev-time only (Pillow, numpy). Each reference is what transformers' `load_image` returns for the
file: `PIL.ImageOps.exif_transpose(Image.open(f)).convert("RGB")`. Written: JPEGs with EXIF
orientations 1-8 (little-endian EXIF), one with big-endian ("MM") EXIF, one with an out-of-range
orientation (ignored), a PNG with an eXIf chunk, and a CMYK JPEG (Adobe-inverted, as Pillow writes it).

Usage: python3 Scripts/make_load_image_fixtures.py [output_dir]
"""
import io
import json
import os
import struct
import sys

import numpy as np
from PIL import Image, ImageOps

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/ChimeraIOTests/Fixtures/images/load_image"
os.makedirs(OUT, exist_ok=True)

# A 7x5 image whose every pixel differs, so any wrong mapping shows.
y, x = np.mgrid[0:5, 0:7]
pixels = np.stack([x * 36, y * 60, (x * 5 + y * 11) % 256], -1).astype(np.uint8)
source = Image.fromarray(pixels, "RGB")


def exif(orientation, big_endian=False):
    """Raw EXIF (with its "Exif\\0\\0" header): one IFD0 entry, 0x0112 SHORT = orientation."""
    order = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(order + "HI", 42, 8)
    tiff += struct.pack(order + "H", 1) + struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(order + "I", 0)
    return b"Exif\x00\x00" + tiff


cases = []


def add(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    im = Image.open(io.BytesIO(data))
    turned = ImageOps.exif_transpose(im).convert("RGB")
    with open(os.path.join(OUT, name + ".rgb.u8"), "wb") as f:
        f.write(np.asarray(turned).tobytes())
    cases.append({"image": name, "width": turned.width, "height": turned.height})


def jpeg(raw_exif):
    buf = io.BytesIO()
    source.save(buf, format="JPEG", quality=95, subsampling=0, exif=raw_exif)
    return buf.getvalue()


for o in range(1, 9):
    add(f"orientation{o}.jpg", jpeg(exif(o)))
add("orientation6_mm.jpg", jpeg(exif(6, big_endian=True)))
add("orientation9.jpg", jpeg(exif(9)))
buf = io.BytesIO()
source.save(buf, format="PNG", exif=exif(8)[6:])  # PNG's eXIf chunk holds the TIFF data alone
add("orientation8.png", buf.getvalue())

# CMYK: every channel varies, K included, so the inversion and cmyk2rgb's rounding both show.
cmyk = np.stack([x * 36, y * 60, (x * 7 + y * 13) % 256, (x * y * 9 + 20) % 256], -1).astype(np.uint8)
buf = io.BytesIO()
Image.fromarray(cmyk, "CMYK").save(buf, format="JPEG", quality=95)
add("cmyk.jpg", buf.getvalue())

with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1)
print(f"wrote {len(cases)} cases to {OUT}")
