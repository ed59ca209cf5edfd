#!/usr/bin/env python3
"""Writes tests/core/data/testdata/pil_resize.json: what PIL's Image.resize((w, h), BILINEAR)
(the resize inside Hugging Face's ViTImageProcessor) makes of synthetic RGB images, so that
image_test.cpp can check ResizeBilinear against PIL without Python at test time.

The source images are defined by a formula that the C++ test repeats:
    r = (37x + 91y + 13) mod 256,  g = (x^2 + 3y^2 + xy) mod 256,  b = (29 (x xor y) + 7) mod 256
Small outputs are stored whole (hex); large ones as a 64-bit FNV-1a hash of their bytes.

Usage: python3 tools/gen_pil_resize_fixture.py   (needs Pillow: Debian's python3-pil)
"""
import json
import os

import PIL
from PIL import Image

CASES = [  # (source width, source height, target width, target height)
    (37, 23, 16, 10),    # downscale both axes
    (37, 23, 50, 41),    # upscale both axes
    (37, 23, 37, 40),    # vertical pass only
    (37, 23, 20, 23),    # horizontal pass only
    (37, 23, 224, 224),  # upscale to ViT size
    (301, 217, 224, 224),
    (640, 480, 224, 224),  # a typical product photo
]
STORE_WHOLE_UP_TO = 2000  # bytes


def source(width, height):
    pixels = bytearray()
    for y in range(height):
        for x in range(width):
            pixels += bytes([(37 * x + 91 * y + 13) % 256, (x * x + 3 * y * y + x * y) % 256,
                             (29 * (x ^ y) + 7) % 256])
    return Image.frombytes("RGB", (width, height), bytes(pixels))


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def main():
    cases = []
    for sw, sh, tw, th in CASES:
        out = source(sw, sh).resize((tw, th), Image.BILINEAR).tobytes()
        case = {"source_width": sw, "source_height": sh, "width": tw, "height": th}
        if len(out) <= STORE_WHOLE_UP_TO:
            case["rgb_hex"] = out.hex()
        else:
            case["fnv1a64"] = fnv1a64(out)
        cases.append(case)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "tests", "core", "data", "testdata", "pil_resize.json")
    with open(path, "w") as f:
        json.dump({"generator": "tools/gen_pil_resize_fixture.py", "pillow": PIL.__version__,
                   "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
