#!/usr/bin/env python3
"""Generates the fixtures of images Pillow's `Image.open` alone does not show as they are meant
(Tests/ChimeraIOTests/Fixtures/images/load_image/).

Dev-time only (Pillow, numpy). Each reference is what transformers' `load_image` returns for the
file: `PIL.ImageOps.exif_transpose(Image.open(f)).convert("RGB")`. Written: JPEGs with EXIF
orientations 1-8 (little-endian EXIF), one with big-endian ("MM") EXIF, one with an out-of-range
orientation (ignored), a PNG with an eXIf chunk, the EXIF layouts Pillow's getexif reads in its own
way (LONG and RATIONAL values, a BYTE one it does not apply, a count past the data, a doubled
prefix, two APP1 blocks joined, a swapped TIFF magic, XMP's tiff:Orientation in JPEG and PNG, two
eXIf chunks), a CMYK JPEG (Adobe-inverted, as Pillow writes it), and WebPs: lossy and lossless, with
and without alpha (the alpha plane is written too, as <name>.alpha.u8), oriented by an EXIF or an
XMP chunk; plus an animated WebP and a truncated one, which Chimera refuses (no reference).

Usage: python3 Scripts/make_load_image_fixtures.py [output_dir]
"""
import io
import json
import os
import struct
import sys
import zlib

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
    transposed = ImageOps.exif_transpose(im)
    turned = transposed.convert("RGB")
    with open(os.path.join(OUT, name + ".rgb.u8"), "wb") as f:
        f.write(np.asarray(turned).tobytes())
    case = {"image": name, "width": turned.width, "height": turned.height}
    if "A" in transposed.getbands():
        with open(os.path.join(OUT, name + ".alpha.u8"), "wb") as f:
            f.write(np.asarray(transposed.getchannel("A")).tobytes())
        case["alpha"] = True
    cases.append(case)


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

# EXIF as Pillow's getexif reads it, in the layouts cameras and editors (and broken writers) leave.
def ifd(entries, big_endian=False, magic=None):
    """TIFF data: IFD0 at offset 8 with `entries` (tag, type, count, 4-byte value field); `extra`
    appended after the IFD for out-of-line values."""
    order = ">" if big_endian else "<"
    head = (b"MM" if big_endian else b"II") + (magic or struct.pack(order + "H", 42)) + struct.pack(order + "I", 8)
    body = struct.pack(order + "H", len(entries))
    for tag, typ, count, value in entries:
        body += struct.pack(order + "HHI", tag, typ, count) + value
    return head + body + struct.pack(order + "I", 0)


def with_app1(segments):
    """A JPEG of `source` with raw APP1 `segments` right after SOI."""
    buf = io.BytesIO()
    source.save(buf, format="JPEG", quality=95, subsampling=0)
    data = buf.getvalue()
    app = b"".join(b"\xff\xe1" + struct.pack(">H", len(seg) + 2) + seg for seg in segments)
    return data[:2] + app + data[2:]


EXIF = b"Exif\x00\x00"
add("long.jpg", with_app1([EXIF + ifd([(0x0112, 4, 1, struct.pack("<I", 6))])]))
add("rational.jpg", with_app1([EXIF + ifd([(0x0112, 5, 1, struct.pack("<I", 26))]) + struct.pack("<II", 12, 2)]))
add("byte_type.jpg", with_app1([EXIF + ifd([(0x0112, 1, 1, b"\x06\0\0\0")])]))
add("count_huge.jpg", with_app1([EXIF + ifd([(0x0112, 3, 0x10000000, struct.pack("<I", 8))])]))
add("double_prefix.jpg", with_app1([EXIF + EXIF + ifd([(0x0112, 3, 1, struct.pack("<HH", 6, 0))])]))
add("two_exif_app1.jpg", with_app1([EXIF, EXIF + ifd([(0x0112, 3, 1, struct.pack("<HH", 5, 0))])]))
add("swapped_magic.jpg", with_app1([EXIF + ifd([(0x0112, 3, 1, struct.pack("<HH", 7, 0))], magic=b"\x00\x2a")]))
XMP = b"http://ns.adobe.com/xap/1.0/\x00"
add("xmp.jpg", with_app1([XMP + b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>']))
add("exif_over_xmp.jpg", with_app1([EXIF + ifd([(0x0112, 3, 1, struct.pack("<HH", 1, 0))]),
                                    XMP + b"<tiff:Orientation>8</tiff:Orientation>"]))


def png_with_chunks(chunks):
    """A PNG of `source` with extra chunks (type, data) before IEND."""
    buf = io.BytesIO()
    source.save(buf, format="PNG")
    data = buf.getvalue()
    extra = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks)
    return data[:-12] + extra + data[-12:]


add("xmp_itxt.png", png_with_chunks([(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<tiff:Orientation>3</tiff:Orientation>")]))
add("two_exif.png", png_with_chunks([(b"eXIf", ifd([(0x0112, 3, 1, struct.pack("<HH", 1, 0))])),
                                     (b"eXIf", ifd([(0x0112, 3, 1, struct.pack("<HH", 6, 0))]))]))

# CMYK: every channel varies, K included, so the inversion and cmyk2rgb's rounding both show.
cmyk = np.stack([x * 36, y * 60, (x * 7 + y * 13) % 256, (x * y * 9 + 20) % 256], -1).astype(np.uint8)
buf = io.BytesIO()
Image.fromarray(cmyk, "CMYK").save(buf, format="JPEG", quality=95)
add("cmyk.jpg", buf.getvalue())

# WebP: a 37x23 image with edges and noise, so that lossy decoding's upsampling and filters show.
rng = np.random.default_rng(7)
wy, wx = np.mgrid[0:23, 0:37]
noisy = np.stack([wx * 7, wy * 11, ((wx // 6 + wy // 5) % 2) * 200], -1) + rng.integers(0, 40, (23, 37, 3))
webp_source = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
webp_alpha = Image.fromarray(np.clip(wx * 9 + wy * 3 - 40, 0, 255).astype(np.uint8), "L")  # 0 on the left


def webp(image, **options):
    buf = io.BytesIO()
    image.save(buf, format="WEBP", **options)
    return buf.getvalue()


add("lossy.webp", webp(webp_source, quality=70))
add("lossless.webp", webp(webp_source, lossless=True))
rgba = webp_source.copy()
rgba.putalpha(webp_alpha)
add("alpha_lossy.webp", webp(rgba, quality=70))
add("alpha_lossless.webp", webp(rgba, lossless=True))
add("orientation6.webp", webp(webp_source, quality=90, exif=exif(6)))
add("orientation3_raw_exif.webp", webp(webp_source, quality=90, exif=exif(3)[6:]))  # no "Exif" prefix
add("xmp.webp", webp(webp_source, lossless=True, xmp=b'<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'))
frames = [webp_source, webp_source.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
frames[0].save(os.path.join(OUT, "animated.webp"), format="WEBP", save_all=True, append_images=frames[1:], duration=100)
with open(os.path.join(OUT, "truncated.webp"), "wb") as f:
    f.write(webp(webp_source, quality=70)[:-40])

# A strip longer than 65,535 a side, which Pillow decodes (no reference file: sample x is x % 251).
strip = (np.arange(70000) % 251).astype(np.uint8).reshape(1, 70000)
Image.fromarray(strip, "L").save(os.path.join(OUT, "wide_70000x1.png"), optimize=True)

with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1)
print(f"wrote {len(cases)} cases to {OUT}")
