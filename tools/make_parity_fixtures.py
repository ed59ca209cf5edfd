#!/usr/bin/env python3
"""Reference outputs from Hugging Face transformers for iisan's parity tests.

Run where transformers, torch, safetensors and Pillow are installed (the GPU machine has them):

    python3 tools/make_parity_fixtures.py --out tests/fixtures --vocab ../shared/data/bert-base-uncased/vocab.txt \
        --items ../shared/data/amazon-scientific/items.tsv

Writes, all small enough to commit (CI needs no Python ML stack):
  bert_small/    config.json, model.safetensors (BertModel, seeded random weights),
                 reference.safetensors (input_ids, attention_mask, hidden_state_<i>)
  vit_small/     config.json, model.safetensors (ViTModel), reference.safetensors
                 (pixel_values, hidden_state_<i>)
  tokenizer/     vocab.txt (copy), scientific_ids.tsv.gz (title<TAB>ids for every title of the
                 items file), adversarial.json ([{"text", "ids"}])
  images/        generated PNG/JPEG files of many sizes and modes, preprocessor_config.json, and
                 reference.safetensors with ViTImageProcessor's pixel tensor per file
  versions.json  library versions that produced the fixtures
"""
import argparse
import gzip
import io
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
import transformers
from transformers import BertConfig, BertModel, BertTokenizer, ViTConfig, ViTImageProcessor, ViTModel

SEED = 20261130


def bert_fixture(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, hidden_act="gelu")
    model = BertModel(config, add_pooling_layer=True).eval()
    # Random init leaves LayerNorms at 1/0 and biases at 0; perturb them so that every
    # parameter is exercised by the comparison.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(out)
    g = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(5, 1000, (3, 16), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    mask[2, 5:] = 0
    ids[mask == 0] = 0
    with torch.no_grad():
        out_h = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    tensors = {"input_ids": ids.contiguous(), "attention_mask": mask.contiguous()}
    for i, h in enumerate(out_h):
        tensors[f"hidden_state_{i}"] = h.contiguous()
    save_file(tensors, os.path.join(out, "reference.safetensors"))


def vit_fixture(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED + 2)
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=3,
                       num_attention_heads=4, intermediate_size=128, qkv_bias=True, hidden_act="gelu")
    model = ViTModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name:
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(out)
    g = torch.Generator().manual_seed(SEED + 3)
    pixels = torch.rand((2, 3, 32, 32), generator=g) * 2 - 1
    with torch.no_grad():
        out_h = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    tensors = {"pixel_values": pixels.contiguous()}
    for i, h in enumerate(out_h):
        tensors[f"hidden_state_{i}"] = h.contiguous()
    save_file(tensors, os.path.join(out, "reference.safetensors"))


ADVERSARIAL = [
    "", " ", "Café Naïve résumé", "ÀÉÎÕÜ àéîõü Ççñ", "東京大学 北京", "中文字符和English混合",
    "emoji 😀👍🏽 🚀 end", "tab\there", "line\nbreak", "ctrl\x00\x01\x07\x1b chars", "zero\u200bwidth",
    "nbsp\u00a0and\u2028sep", "&amp; &lt;tag&gt; &quot;q&quot; &#39;", "<b>bold</b> &nbsp;",
    "a" * 120, "supercalifragilisticexpialidocious" * 3, "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ", "İstanbul ΣΊΣΥΦΟΣ",
    "Ångström µm ½ ° ±5%", "don't stop-believing... (really?!)", "[CLS] [SEP] [PAD] [MASK] [UNK]",
    "x" * 40 + " " + "word " * 40, "ﬁ ligature ǅ", "한국어 텍스트", "Ελληνικά κείμενο",
    "\ufeffbom start", "combining e\u0301 a\u0308", "1,234.56 USD/€", "under_score snake_case",
]


def tokenizer_fixture(out, vocab, items):
    os.makedirs(out, exist_ok=True)
    shutil.copyfile(vocab, os.path.join(out, "vocab.txt"))
    tok = BertTokenizer(os.path.join(out, "vocab.txt"), do_lower_case=True)

    def encode(text):
        return tok(text, max_length=30, truncation=True, padding="max_length")["input_ids"]

    lines = []
    with open(items, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            _, title = line.split("\t", 1)
            ids = [i for i in encode(title) if i != 0]
            lines.append(title + "\t" + " ".join(map(str, ids)))
    with gzip.open(os.path.join(out, "scientific_ids.tsv.gz"), "wt", encoding="utf-8", compresslevel=9) as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "adversarial.json"), "w", encoding="utf-8") as f:
        json.dump([{"text": t, "ids": encode(t)} for t in ADVERSARIAL], f, ensure_ascii=False, indent=0)


def image_fixture(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    processor = ViTImageProcessor(size={"height": 48, "width": 48}, image_mean=[0.5, 0.5, 0.5],
                                  image_std=[0.5, 0.5, 0.5], do_resize=True, do_rescale=True,
                                  do_normalize=True, resample=2)
    processor.save_pretrained(out)
    specs = [(48, 48, "RGB", "png"), (100, 37, "RGB", "png"), (17, 200, "RGB", "png"), (640, 480, "RGB", "jpg"),
             (33, 33, "L", "png"), (64, 96, "L", "jpg"), (80, 50, "RGBA", "png"), (300, 300, "RGB", "jpg"),
             (5, 7, "RGB", "png"), (1000, 20, "RGB", "png")]
    tensors = {}
    for k, (w, h, mode, ext) in enumerate(specs):
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        # Smooth gradients plus noise: resampling differences show, JPEG stays realistic.
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * (c + 1) * 255 // max(w, 1) + yy * 128 // max(h, 1)) % 256 for c in range(channels)], -1)
        noise = rng.integers(-20, 21, size=base.shape)
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
        name = f"img{k:02d}_{w}x{h}_{mode}.{ext}"
        img.save(os.path.join(out, name), quality=90) if ext == "jpg" else img.save(os.path.join(out, name))
        loaded = Image.open(os.path.join(out, name)).convert("RGB")
        pixels = processor(images=loaded, return_tensors="pt")["pixel_values"][0]
        tensors[name] = pixels.contiguous().float()
    save_file(tensors, os.path.join(out, "reference.safetensors"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--vocab", required=True)
    parser.add_argument("--items", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    bert_fixture(os.path.join(args.out, "bert_small"))
    vit_fixture(os.path.join(args.out, "vit_small"))
    tokenizer_fixture(os.path.join(args.out, "tokenizer"), args.vocab, args.items)
    image_fixture(os.path.join(args.out, "images"))
    import PIL
    with open(os.path.join(args.out, "versions.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "pillow": PIL.__version__, "seed": SEED,
                   "tokenizer_class": type(BertTokenizer(args.vocab)).__name__,
                   "image_processor_class": type(ViTImageProcessor()).__name__}, f, indent=1)


if __name__ == "__main__":
    main()
