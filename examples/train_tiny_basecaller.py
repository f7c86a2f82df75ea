"""A tiny LM basecaller end to end, offline: a decoder-only GPT-2 from a config learns to read bases from
bwav tokens on the shared paired reads (real R9.4.1 signal + its Guppy basecalls with move tables).

Each training row is one chunk of a read, built through ``datasets``::

    reads_to_dataset(signal, basecalls=SAM)  ->  .map(pair_batch)  ->  .map(to_lm_example)

and laid out as ``<s> <|bwav:…|>… <sep> A C G T … </s>``: the signal tokens are the prompt, the loss is on the
bases and ``</s>`` only (every other label is -100). Whole reads are held out (the last ``--heldout`` read ids
in sorted order), so the held-out loss is measured on signal the model never saw.

    python examples/train_tiny_basecaller.py --steps 300

The reads are 4 kHz and the default tokenizer 5 kHz, so the pairs are made with ``resample=True``. A chunk of
1600 raw samples is 400 signal tokens and ~120 bases. Needs ../shared beside the checkout (or --signal/--basecalls).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from pathlib import Path

import datasets
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import nst_hf
from nst_hf.hf_datasets import pair_batch, reads_to_dataset
from nst_hf.lm import extend_lm_tokenizer

PAIRED = Path(__file__).resolve().parents[2] / "shared" / "data" / "paired" / "squigualiser_r9"
SIGNAL, BASECALLS = PAIRED / "reads.blow5", PAIRED / "moves.sam"
BASES = "ACGT"


def build_lm_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with one token per base and the special tokens (a real run would load its LM's)."""
    words = ["<pad>", "<unk>", "<s>", "</s>", "<sep>", *BASES]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>", sep_token="<sep>")


def to_lm_example(batch, lm_tokenizer) -> dict:
    """``datasets.map(batched=True)``: paired rows → ``input_ids`` and ``labels`` (-100 up to ``<sep>``)."""
    texts = [f"<s> {text} <sep> {' '.join(bases)} </s>" for text, bases in zip(batch["text"], batch["bases"])]
    ids = lm_tokenizer(texts, add_special_tokens=False)["input_ids"]
    sep = lm_tokenizer.sep_token_id
    labels = []
    for row, bases in zip(ids, batch["bases"]):
        prompt = row.index(sep) + 1
        if len(row) - prompt != len(bases) + 1:  # one id per base, then </s>
            raise ValueError(f"expected {len(bases) + 1} target ids after <sep>, got {len(row) - prompt}")
        labels.append([-100] * prompt + row[prompt:])
    return {"input_ids": ids, "labels": labels}


def collate(rows, pad_id: int) -> dict:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def heldout_loss(model, rows, pad_id: int, batch_size: int = 16) -> float:
    """Mean cross-entropy (nats) per target token (bases and ``</s>``) over every held-out chunk."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        batch = collate(rows[i:i + batch_size], pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100,
                                                   reduction="sum")
        total += losses.item()
        count += int((targets != -100).sum())
    model.train()
    return total / count


def with_wrong_signal(rows) -> list[dict]:
    """Each chunk's bases after the next chunk's signal (rotated by one): what the loss is when the signal
    says nothing about the bases. A model that reads the signal does worse here than on the true pairs."""
    out = []
    for row, other in zip(rows, rows[1:] + rows[:1]):
        cut, other_cut = row["labels"].count(-100), other["labels"].count(-100)
        out.append({"input_ids": other["input_ids"][:other_cut] + row["input_ids"][cut:],
                    "labels": [-100] * other_cut + row["labels"][cut:]})
    return out


def unigram_entropy(rows) -> float:
    """Entropy (nats) of the target-token distribution: the loss of a model that ignores signal and context."""
    counts = Counter(t for r in rows for t in r["labels"] if t != -100)
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values())


def main(steps: int = 300, chunk_size: int = 1600, seed: int = 0, batch_size: int = 8, lr: float = 3e-3,
         n_embd: int = 64, n_layer: int = 2, n_head: int = 4, heldout: int = 4, read_ids=None,
         signal=SIGNAL, basecalls=BASECALLS, signal_tokenizer="default", eval_every: int = 0,
         cache_dir: str | None = None, quiet: bool = False) -> dict:
    """Train for ``steps`` steps; return the losses (nats per target token) and what was trained on.

    ``read_ids`` limits the run to those reads (default: every read in ``basecalls``); of them, the last
    ``heldout`` in sorted order are held out. ``eval_every`` > 0 also measures the held-out loss every that
    many steps.
    """
    say = (lambda *a: None) if quiet else print
    bars = datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        return _run(steps, chunk_size, seed, batch_size, lr, n_embd, n_layer, n_head, heldout, read_ids, signal,
                    basecalls, signal_tokenizer, eval_every, cache_dir, say)
    finally:
        if bars:
            datasets.enable_progress_bars()


def _run(steps, chunk_size, seed, batch_size, lr, n_embd, n_layer, n_head, heldout, read_ids, signal, basecalls,
         signal_tokenizer, eval_every, cache_dir, say) -> dict:
    started = time.perf_counter()
    torch.manual_seed(seed)
    signal_tok = nst_hf.load_tokenizer(signal_tokenizer) if isinstance(signal_tokenizer, str) else signal_tokenizer
    lm_tok = build_lm_tokenizer()
    added = extend_lm_tokenizer(lm_tok, signal_tok)

    if read_ids is None:
        with nst_hf.open_basecalls(basecalls) as calls:
            read_ids = list(calls)
    read_ids = sorted(read_ids)
    if not 0 < heldout < len(read_ids):
        raise ValueError(f"heldout={heldout} must leave reads on both sides of {len(read_ids)} reads")
    held = set(read_ids[-heldout:])

    reads = reads_to_dataset(signal, basecalls=basecalls, cache_dir=cache_dir)
    wanted = set(read_ids)
    if set(reads["read_id"]) != wanted:  # (filtered here: reads_to_dataset(read_ids=...) trips datasets' sharding)
        reads = reads.filter(lambda read_id: read_id in wanted, input_columns="read_id")
    pairs = reads.map(pair_batch, batched=True, batch_size=4, remove_columns=reads.column_names,
                      fn_kwargs={"tokenizer": signal_tok, "chunk_size": chunk_size, "resample": True})
    pairs = pairs.filter(lambda row: len(row["bases"]) > 0)  # e.g. a read's short last chunk past the last base
    examples = pairs.map(to_lm_example, batched=True, fn_kwargs={"lm_tokenizer": lm_tok},
                         remove_columns=[c for c in pairs.column_names if c != "read_id"])
    train = examples.filter(lambda row: row["read_id"] not in held)
    test = examples.filter(lambda row: row["read_id"] in held)
    train_rows, test_rows = list(train.select_columns(["input_ids", "labels"])), list(test.select_columns(
        ["input_ids", "labels"]))
    longest = max(len(r["input_ids"]) for r in train_rows + test_rows)
    baseline = unigram_entropy(train_rows)
    say(f"{added} bwav tokens added; LM vocabulary {len(lm_tok)}; {len(read_ids) - heldout} train reads "
        f"({len(train_rows)} chunks), {heldout} held-out reads ({len(test_rows)} chunks); longest sequence "
        f"{longest}; unigram entropy of the targets {baseline:.3f} nats (ln 4 = {math.log(4):.3f})")

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(lm_tok), n_positions=longest, n_embd=n_embd,
                                       n_layer=n_layer, n_head=n_head, pad_token_id=lm_tok.pad_token_id,
                                       bos_token_id=lm_tok.bos_token_id, eos_token_id=lm_tok.eos_token_id))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    warmup = max(5, steps // 10)  # linear warm-up, then cosine decay to a tenth of lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(seed)
    pad = lm_tok.pad_token_id

    history = [(0, heldout_loss(model, test_rows, pad))]
    say(f"held-out loss at start {history[0][1]:.3f}")
    train_losses, order = [], []
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order += torch.randperm(len(train_rows), generator=generator).tolist()
        picked, order = order[:batch_size], order[batch_size:]
        loss = model(**collate([train_rows[i] for i in picked], pad)).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        train_losses.append(loss.item())
        if step == 1 or step % 10 == 0 or step == steps:
            say(f"step {step}: train loss {train_losses[-1]:.3f}")
        if (eval_every and step % eval_every == 0) or step == steps:
            if history[-1][0] != step:
                history.append((step, heldout_loss(model, test_rows, pad)))
                say(f"step {step}: held-out loss {history[-1][1]:.3f}")
    wrong = heldout_loss(model, with_wrong_signal(test_rows), pad)
    seconds = time.perf_counter() - started
    last = train_losses[-10:]
    say(f"{steps} steps in {seconds:.0f} s: train loss {train_losses[0]:.3f} -> {sum(last) / len(last):.3f} "
        f"(mean of the last {len(last)} steps), held-out loss {history[0][1]:.3f} -> {history[-1][1]:.3f} "
        f"({wrong:.3f} with each chunk's bases after another chunk's signal)")
    return {"train_losses": train_losses, "heldout_loss_start": history[0][1], "heldout_loss_end": history[-1][1],
            "heldout_history": history, "heldout_loss_wrong_signal": wrong, "unigram_entropy": baseline, "steps": steps, "seconds": seconds,
            "train_reads": len(read_ids) - heldout, "heldout_reads": sorted(held), "train_chunks": len(train_rows),
            "heldout_chunks": len(test_rows), "vocab_size": len(lm_tok),
            "parameters": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--chunk-size", type=int, default=1600, help="raw samples per chunk (4 kHz reads)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout", type=int, default=4, help="whole reads held out")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--signal", default=str(SIGNAL))
    parser.add_argument("--basecalls", default=str(BASECALLS))
    parser.add_argument("--tokenizer", default="default")
    args = parser.parse_args()
    main(steps=args.steps, chunk_size=args.chunk_size, seed=args.seed, batch_size=args.batch_size,
         heldout=args.heldout, eval_every=args.eval_every, signal=args.signal, basecalls=args.basecalls,
         signal_tokenizer=args.tokenizer)
