"""Forward and forward+backward step times of Hugging Face's BERT-base and ViT-base (random
weights) under bf16 autocast, as a yardstick for our C++ backbones' training-step times.
Usage (GPU machine): python3 tools/h200_backbone_step_reference.py [batch]"""
import sys
import time

import torch
from transformers import BertConfig, BertModel, ViTConfig, ViTModel

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 256
dev = "cuda"


def timed(fn, iters=10, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters * 1e3


def run(name, model, inputs, trainable):
    model.to(dev).train()
    for n, p in model.named_parameters():
        p.requires_grad_(trainable(n))

    def fwd():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(**inputs).last_hidden_state[:, 0].float().sum()

    def fwd_bwd():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(**inputs).last_hidden_state[:, 0].float().sum()
        out.backward()

    print(f"{name}: batch {batch}: forward {timed(fwd):.1f} ms, forward+backward {timed(fwd_bwd):.1f} ms", flush=True)


vit = ViTModel(ViTConfig(attn_implementation="sdpa"), add_pooling_layer=False)
pixels = {"pixel_values": torch.randn(batch, 3, 224, 224, device=dev)}
bert = BertModel(BertConfig(attn_implementation="sdpa"), add_pooling_layer=False)
tokens = {"input_ids": torch.randint(1000, 30000, (batch, 30), device=dev),
          "attention_mask": torch.ones(batch, 30, dtype=torch.long, device=dev)}
for label, rule in [("FFT", lambda n: True), ("BitFit", lambda n: n.endswith("bias"))]:
    run(f"ViT-base {label}", vit, pixels, rule)
    run(f"BERT-base {label}", bert, tokens, rule)
