#!/usr/bin/env python3
"""Random-initialised bert-base-uncased and vit-base-patch16-224 saved by transformers, reference
hidden states for a few inputs (fp32, TF32 off), and transformers' own bf16 forward throughput,
for experiments/bench/backbone_parity.cpp to compare against. Run on the GPU machine:

    python3 tools/h200_backbone_reference.py --configs DIR_WITH_BOTH_CONFIG_FOLDERS --out /tmp/h200
"""
import argparse
import json
import os
import shutil
import time

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, ViTConfig, ViTModel

SEED = 20261130


def throughput(model, make_batch, batch, iters=20, warmup=3):
    with torch.inference_mode():
        inputs = make_batch(batch)
        for _ in range(warmup):
            model(**inputs)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            model(**inputs)
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - start)


def profile_forwards(model, inputs, batch, phase, out_dir, iterations):
    """Device kernels of `iterations` forwards, summed by name, in the rows of our own profiles
    (core/train/kernel_profile.h: name, calls, total_seconds) so that one script reads both."""
    from torch.profiler import ProfilerActivity, profile
    with torch.inference_mode():
        for _ in range(2):
            model(**inputs)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(iterations):
                model(**inputs)
            torch.cuda.synchronize()
    rows = {}
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        row = rows.setdefault(event.name, {"name": event.name, "calls": 0, "total_seconds": 0.0})
        row["calls"] += 1
        row["total_seconds"] += event.time_range.elapsed_us() * 1e-6
    kernels = sorted(rows.values(), key=lambda r: -r["total_seconds"])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, phase + ".json"), "w") as f:
        json.dump({"phase": phase, "step_name": f"bf16 forward of {batch} items", "steps": iterations,
                   "kernel_seconds": sum(r["total_seconds"] for r in kernels), "kernels": kernels}, f, indent=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--configs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--text-batch", type=int, default=512)
    p.add_argument("--image-batch", type=int, default=256)
    p.add_argument("--profile-dir", help="also write per-kernel profiles of the bf16 forwards here")
    p.add_argument("--profile-iterations", type=int, default=5)
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    result = {"torch": torch.__version__}
    import transformers
    result["transformers"] = transformers.__version__

    torch.manual_seed(SEED)
    bert = BertModel(BertConfig.from_pretrained(os.path.join(args.configs, "bert-base-uncased"))).cuda().eval()
    bert.save_pretrained(os.path.join(args.out, "bert-base"))
    shutil.copy(os.path.join(args.configs, "bert-base-uncased", "vocab.txt"), os.path.join(args.out, "bert-base"))
    g = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(1000, 30000, (8, 30), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    for row, length in enumerate([30, 25, 20, 12, 8, 30, 17, 3]):
        mask[row, length:] = 0
        ids[row, length - 1] = 102
    ids[mask == 0] = 0
    with torch.no_grad():
        hs = bert(input_ids=ids.cuda(), attention_mask=mask.cuda(), output_hidden_states=True).hidden_states
    ref = {"input_ids": ids, "attention_mask": mask}
    ref.update({f"hidden_state_{i}": h.cpu().contiguous() for i, h in enumerate(hs)})
    save_file(ref, os.path.join(args.out, "bert_reference.safetensors"))

    torch.manual_seed(SEED + 2)
    vit = ViTModel(ViTConfig.from_pretrained(os.path.join(args.configs, "vit-base-patch16-224")),
                   add_pooling_layer=False).cuda().eval()
    vit.save_pretrained(os.path.join(args.out, "vit-base"))
    shutil.copy(os.path.join(args.configs, "vit-base-patch16-224", "preprocessor_config.json"),
                os.path.join(args.out, "vit-base"))
    pixels = torch.rand((4, 3, 224, 224), generator=g) * 2 - 1
    with torch.no_grad():
        hs = vit(pixel_values=pixels.cuda(), output_hidden_states=True).hidden_states
    ref = {"pixel_values": pixels}
    ref.update({f"hidden_state_{i}": h.cpu().contiguous() for i, h in enumerate(hs)})
    save_file(ref, os.path.join(args.out, "vit_reference.safetensors"))

    bert_bf16 = bert.to(torch.bfloat16)
    vit_bf16 = vit.to(torch.bfloat16)
    result["attention_implementation"] = bert_bf16.config._attn_implementation
    tb, ib = args.text_batch, args.image_batch
    result["transformers_bf16_text_items_per_s"] = throughput(
        bert_bf16, lambda b: {"input_ids": torch.randint(1000, 30000, (b, 30), device="cuda"),
                              "attention_mask": torch.ones((b, 30), dtype=torch.long, device="cuda"),
                              "output_hidden_states": True}, tb)
    result["transformers_bf16_image_items_per_s"] = throughput(
        vit_bf16, lambda b: {"pixel_values": torch.rand((b, 3, 224, 224), device="cuda", dtype=torch.bfloat16),
                             "output_hidden_states": True}, ib)
    result["text_batch"] = tb
    result["image_batch"] = ib
    if args.profile_dir:
        text = {"input_ids": torch.randint(1000, 30000, (tb, 30), device="cuda"),
                "attention_mask": torch.ones((tb, 30), dtype=torch.long, device="cuda"),
                "output_hidden_states": True}
        image = {"pixel_values": torch.rand((ib, 3, 224, 224), device="cuda", dtype=torch.bfloat16),
                 "output_hidden_states": True}
        try:
            profile_forwards(bert_bf16, text, tb, "bert_forward", args.profile_dir, args.profile_iterations)
            profile_forwards(vit_bf16, image, ib, "vit_forward", args.profile_dir, args.profile_iterations)
            result["profile_dir"] = args.profile_dir
        except Exception as error:  # the throughput figures above still count
            result["profile_error"] = repr(error)
    with open(os.path.join(args.out, "transformers.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
