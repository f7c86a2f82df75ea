"""Language-model integration: give an existing LM tokenizer the bwav vocabulary."""

from __future__ import annotations


def bwav_tokens(signal_tokenizer) -> list[str]:
    """Every bwav token string of ``signal_tokenizer`` in id order (specials excluded)."""
    return signal_tokenizer.convert_ids_to_tokens(list(range(signal_tokenizer.vocab_size)))


def extend_lm_tokenizer(lm_tokenizer, signal_tokenizer) -> int:
    """Add the bwav token strings to ``lm_tokenizer`` as added tokens; return how many were new.

    Each ``<|bwav:…|>`` string then encodes to exactly one LM id and decodes back unchanged. Call
    ``model.resize_token_embeddings(len(lm_tokenizer))`` afterwards.
    """
    from tokenizers import AddedToken

    existing = lm_tokenizer.get_vocab()
    new = [t for t in bwav_tokens(signal_tokenizer) if t not in existing]
    if not new:
        return 0
    return lm_tokenizer.add_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False,
                                               special=False) for t in new])
