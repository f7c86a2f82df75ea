"""A tiny Signal LM end to end, offline: GPT-2 from a config, an LM tokenizer extended with the bwav
vocabulary, reads tokenized with datasets.map + tokenize_batch, and a few training steps.

    python examples/train_tiny_lm.py --steps 20
"""

import argparse
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import nst_hf
from nst_hf.hf_datasets import reads_to_dataset, tokenize_batch
from nst_hf.lm import extend_lm_tokenizer

SAMPLE = Path(__file__).parent / "data" / "sample.pod5"


def build_text_tokenizer() -> PreTrainedTokenizerFast:
    """A small word-level text tokenizer made in place (a real run would load its LM's tokenizer)."""
    words = ["<pad>", "<unk>", "<s>", "</s>", "read", "signal", "dna", "rna"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")


def main(steps: int = 20, signal_tokenizer="default", inputs=(SAMPLE,), max_length: int = 256, seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    signal_tok = nst_hf.auto.load_tokenizer(signal_tokenizer) if isinstance(signal_tokenizer, str) else signal_tokenizer
    lm_tok = build_text_tokenizer()
    added = extend_lm_tokenizer(lm_tok, signal_tok)
    reads = reads_to_dataset(list(inputs))
    texts = reads.map(tokenize_batch, batched=True, fn_kwargs={"tokenizer": signal_tok},
                      remove_columns=reads.column_names)["text"]
    batch = lm_tok(["<s> " + t for t in texts], truncation=True, max_length=max_length, padding=True,
                   return_tensors="pt")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(lm_tok), n_positions=max_length, n_embd=64, n_layer=2,
                                       n_head=2, pad_token_id=lm_tok.pad_token_id))
    model.resize_token_embeddings(len(lm_tok))
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        print(f"step {step}: loss {losses[-1]:.3f}")
    print(f"{added} bwav tokens added; LM vocabulary {len(lm_tok)}; {len(texts)} reads")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tokenizer", default="default")
    main(parser.parse_args().steps, parser.parse_args().tokenizer)
