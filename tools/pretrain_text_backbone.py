#!/usr/bin/env python3
"""Masked-language-model pretraining of a small BERT on the item titles of a dataset (issue 19).

No pretrained weights exist on our machines, and with random-weight backbones the frozen states
carry too little for an accuracy comparison of IISAN against full fine-tuning. This makes a
text backbone here, from item titles only (never user sequences), and saves a Hugging Face
folder that `iisan` loads as model.text_backbone:

  OUT/config.json        the architecture (a copy of --config)
  OUT/vocab.txt          the vocabulary (a copy of --vocab; bert-base-uncased's)
  OUT/model.safetensors  the BertModel weights (no MLM head: iisan ignores it)
  OUT/pretrain.json      recipe, seed, steps, losses, held-out masked-token accuracy, timings

Recipe: titles tokenised as iisan does (uncased WordPiece, [CLS] title [SEP], --max-len
tokens); a held-out share of the titles (--holdout, chosen by the seed) is never trained on and
measures masked-token accuracy; BERT masking (15 % of the title tokens: 80 % [MASK], 10 %
random, 10 % kept); AdamW (betas 0.9/0.98, weight decay 0.01), linear warm-up then linear decay;
bf16 autocast on a GPU. Runs on the GPU machine (python3 with torch and transformers).

Usage:
  python3 tools/pretrain_text_backbone.py --items DATA/items.tsv --vocab VOCAB.txt \
      --config experiments/backbones/bert-small/config.json --out DIR [--steps 2500 --batch 256]
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import torch

CLS, SEP, MASK, PAD = "[CLS]", "[SEP]", "[MASK]", "[PAD]"


def read_titles(path):
    titles = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                sys.exit(f"{path}:{number}: expected 'item_id<TAB>title'")
            titles.append(parts[1])
    if not titles:
        sys.exit(f"{path}: no titles")
    return titles


def make_tokenizer(vocab, max_len):
    """An uncased WordPiece tokenizer over `vocab`, truncating and padding to max_len: the
    `tokenizers` package's BERT tokenizer, or transformers' where that one is missing."""
    try:
        from tokenizers import BertWordPieceTokenizer

        tok = BertWordPieceTokenizer.from_file(vocab, lowercase=True)
        tok.enable_truncation(max_length=max_len)
        tok.enable_padding(length=max_len, pad_id=tok.token_to_id(PAD), pad_token=PAD)

        def encode(texts):
            out = tok.encode_batch(texts)
            return [e.ids for e in out], [e.attention_mask for e in out]

        ids = {name: tok.token_to_id(name) for name in (CLS, SEP, MASK, PAD)}
        return encode, ids, tok.get_vocab_size()
    except (ImportError, AttributeError) as error:
        print(f"tokenizers' BertWordPieceTokenizer unavailable ({error}); using transformers'", flush=True)
        import transformers

        cls = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer
        tok = cls(vocab_file=vocab, do_lower_case=True)

        def encode(texts):
            out = tok(texts, truncation=True, max_length=max_len, padding="max_length")
            return out["input_ids"], out["attention_mask"]

        ids = {name: tok.convert_tokens_to_ids(name) for name in (CLS, SEP, MASK, PAD)}
        return encode, ids, len(tok)


def mask_tokens(ids, attention, special, mask_id, vocab_size, generator):
    """BERT masking of the non-special tokens: returns (inputs, labels with -100 elsewhere)."""
    device = ids.device
    candidates = attention.bool()
    for token in special:
        candidates &= ids != token
    chosen = (torch.rand(ids.shape, generator=generator, device=device) < 0.15) & candidates
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator, device=device)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = mask_id
    random_tokens = torch.randint(vocab_size, ids.shape, generator=generator, device=device)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_tokens[swap]
    return inputs, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", required=True, help="items.tsv: item_id<TAB>title per line")
    parser.add_argument("--vocab", required=True, help="WordPiece vocab.txt")
    parser.add_argument("--config", required=True, help="a BERT config.json (the architecture)")
    parser.add_argument("--out", required=True, help="folder to write (must not exist)")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=float, default=0.06, help="share of the steps")
    parser.add_argument("--max-len", type=int, default=30, help="tokens per title, [CLS] and [SEP] included")
    parser.add_argument("--holdout", type=float, default=0.05, help="share of the titles held out")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=250)
    args = parser.parse_args()
    if os.path.exists(args.out):
        sys.exit(f"{args.out}: exists; choose a new folder (nothing is overwritten)")
    if not (0 < args.holdout < 1) or args.steps < 1 or args.batch < 1 or args.max_len < 3:
        sys.exit("--holdout must be in (0, 1); --steps, --batch >= 1; --max-len >= 3")

    from transformers import BertConfig, BertForMaskedLM
    from safetensors.torch import save_file

    started = time.time()
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with open(args.config, encoding="utf-8") as f:
        architecture = json.load(f)
    config = BertConfig(**{k: v for k, v in architecture.items() if k != "model_type"})

    titles = read_titles(args.items)
    encode, special_ids, vocab_size = make_tokenizer(args.vocab, args.max_len)
    if vocab_size != config.vocab_size:
        sys.exit(f"{args.vocab}: {vocab_size} tokens, but {args.config} says vocab_size {config.vocab_size}")
    ids, attention = encode(titles)
    ids = torch.tensor(ids, dtype=torch.long)
    attention = torch.tensor(attention, dtype=torch.long)
    order = torch.randperm(len(titles), generator=torch.Generator().manual_seed(args.seed))
    held = max(1, int(round(args.holdout * len(titles))))
    held_index, train_index = order[:held], order[held:]
    train_ids, train_mask = ids[train_index].to(device), attention[train_index].to(device)
    held_ids, held_mask = ids[held_index].to(device), attention[held_index].to(device)
    special = [special_ids[CLS], special_ids[SEP], special_ids[PAD]]

    model = BertForMaskedLM(config).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, int(args.warmup * args.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (args.steps - s) / max(1, args.steps - warmup))))
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def held_out():
        """Masked-token accuracy and loss on the held-out titles, the same masks every time."""
        model.eval()
        generator = torch.Generator(device=device).manual_seed(args.seed + 1)
        correct = total = 0
        loss_sum = 0.0
        with torch.no_grad(), autocast:
            for start in range(0, held_ids.shape[0], 512):
                batch_ids, batch_mask = held_ids[start:start + 512], held_mask[start:start + 512]
                inputs, labels = mask_tokens(batch_ids, batch_mask, special, special_ids[MASK], vocab_size, generator)
                logits = model(input_ids=inputs, attention_mask=batch_mask).logits.float()
                chosen = labels != -100
                correct += (logits.argmax(-1)[chosen] == labels[chosen]).sum().item()
                total += chosen.sum().item()
                loss_sum += torch.nn.functional.cross_entropy(logits[chosen], labels[chosen], reduction="sum").item()
        model.train()
        return correct / max(total, 1), loss_sum / max(total, 1), total

    accuracy0, loss0, masked = held_out()
    print(f"held-out titles {held}, masked tokens {masked}: accuracy {accuracy0:.4f}, loss {loss0:.3f} before training",
          flush=True)
    generator = torch.Generator(device=device).manual_seed(args.seed + 2)
    model.train()
    train_start = time.time()
    recent = []
    history = []
    for step in range(args.steps):
        rows = torch.randint(train_ids.shape[0], (args.batch,), generator=generator, device=device)
        batch_ids, batch_mask = train_ids[rows], train_mask[rows]
        inputs, labels = mask_tokens(batch_ids, batch_mask, special, special_ids[MASK], vocab_size, generator)
        with autocast:
            loss = model(input_ids=inputs, attention_mask=batch_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        recent.append(loss.detach())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            mean = torch.stack(recent).float().mean().item()
            recent = []
            if not math.isfinite(mean):
                sys.exit(f"step {step + 1}: the MLM loss is {mean}; lower --lr")
            elapsed = time.time() - train_start
            rate = (step + 1) * args.batch / elapsed
            eta = (args.steps - step - 1) * args.batch / rate
            history.append({"step": step + 1, "mlm_loss": mean})
            print(f"step {step + 1}/{args.steps}: MLM loss {mean:.3f}, {rate:.0f} titles/s, ETA {eta:.0f} s", flush=True)
    train_seconds = time.time() - train_start
    accuracy, loss_held, _ = held_out()
    print(f"held-out masked-token accuracy {accuracy:.4f} (loss {loss_held:.3f}) after {args.steps} steps, "
          f"{train_seconds:.1f} s", flush=True)

    partial = args.out + ".partial"
    if os.path.exists(partial):
        shutil.rmtree(partial)
    os.makedirs(partial)
    weights = {name: tensor.detach().float().contiguous().cpu() for name, tensor in model.bert.state_dict().items()
               if not name.endswith("position_ids") and not name.endswith("token_type_ids")}
    save_file(weights, os.path.join(partial, "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(args.config, os.path.join(partial, "config.json"))
    shutil.copyfile(args.vocab, os.path.join(partial, "vocab.txt"))
    record = {
        "recipe": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "text": "item titles of items.tsv only (no user sequences, no other text)",
        "titles": len(titles), "train_titles": len(train_index), "held_out_titles": held,
        "masking": "15 % of title tokens: 80 % [MASK], 10 % random, 10 % kept",
        "optimizer": "AdamW betas (0.9, 0.98), eps 1e-6, weight decay 0.01 (matrices), clip 1.0, linear warm-up/decay",
        "precision": "bf16 autocast, fp32 weights" if device.type == "cuda" else "fp32",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "held_out_masked_tokens": masked,
        "held_out_accuracy_before": accuracy0, "held_out_loss_before": loss0,
        "held_out_accuracy": accuracy, "held_out_loss": loss_held,
        "final_mlm_loss": history[-1]["mlm_loss"], "loss_history": history,
        "train_seconds": train_seconds, "total_seconds": time.time() - started,
    }
    with open(os.path.join(partial, "pretrain.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    os.rename(partial, args.out)
    print(json.dumps({k: v for k, v in record.items() if k != "loss_history"}))


if __name__ == "__main__":
    main()
