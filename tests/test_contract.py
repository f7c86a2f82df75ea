"""The Hugging Face API contract, on tiny seeded-random tokenizers of every kind (no ../shared needed).

Save/load through the concrete class and ``AutoTokenizer``, the signal call (batches, padding, tensors),
the text side (ids, decode, unknown text, vocabulary size, ``tokenizer.json``) and the errors a caller sees.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

import nst_hf

#: Lengths of the random test signals (samples): ragged, none a multiple of a stride. (Not shorter: the
#: K-Means chain's 5000-sample running median takes SciPy's slow path, ~0.1-0.4 s a read, below ~2500.)
LENGTHS = (3607, 3001, 2557)
SPECIAL_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "pad_token")


def deepest(tok) -> str | None:
    """The token_type that emits every level (RVQ), else the default."""
    return f"L{tok.num_quantizers}" if tok.is_rvq else None


def ids_per_signal(tok, num_samples: int, token_type: str | None = None) -> int:
    """Expected ids for a signal of ``num_samples`` samples, from the tokenizer's public geometry."""
    if num_samples < tok.min_samples_for_tokens:
        return 0
    if isinstance(tok, nst_hf.NstKMeansTokenizer):  # full windows of `dimension` samples every `stride`
        frames = 1 + (num_samples - tok.dimension) // tok.stride
    else:  # one frame per `samples_per_token` samples, the last one padded
        frames = math.ceil(num_samples / tok.samples_per_token)
    levels = int(token_type[1:]) if token_type else 1
    return frames * levels


@pytest.fixture(scope="module")
def signals(make_pa_signal):
    return [make_pa_signal(n, seed=i) for i, n in enumerate(LENGTHS)]


@pytest.fixture(scope="module")
def saved(tiny_tokenizers, tmp_path_factory):
    """The tiny tokenizer's save_pretrained folder (written once per kind)."""
    folder = tmp_path_factory.mktemp(f"saved-{tiny_tokenizers.bwav_kind}")
    tiny_tokenizers.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------- the tiny tokenizers themselves


def test_tiny_tokenizers_are_distinct_and_use_many_codes(tiny_vq, tiny_rvq, tiny_kmeans, signals):
    toks = (tiny_vq, tiny_rvq, tiny_kmeans)
    assert len({t.fingerprint() for t in toks}) == 3
    for tok in toks:
        ids = tok.encode_signal(signals[0], token_type=deepest(tok), sampling_rate=tok.sampling_rate)
        # a degenerate random tokenizer (one code for everything) would make the equalities below vacuous
        assert len(set(ids)) >= 10, (type(tok).__name__, sorted(set(ids)))


# ---------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("loader", ["class", "auto"])
def test_save_and_load_keeps_fingerprint_and_tokens(tiny_tokenizers, loader, saved, signals):
    tok = tiny_tokenizers
    loaded = type(tok).from_pretrained(saved) if loader == "class" else AutoTokenizer.from_pretrained(saved)
    assert type(loaded) is type(tok)
    assert loaded.fingerprint() == tok.fingerprint()
    assert loaded.sampling_rate == tok.sampling_rate and loaded.preprocessing == tok.preprocessing
    assert len(loaded) == len(tok) and loaded.get_vocab() == tok.get_vocab()
    rate, token_type = tok.sampling_rate, deepest(tok)  # every RVQ level, so no level goes unchecked
    assert (loaded(signals=signals, sampling_rate=rate, token_type=token_type)["input_ids"]
            == tok(signals=signals, sampling_rate=rate, token_type=token_type)["input_ids"])
    assert (loaded.signal_to_text(signals[0], token_type=token_type, sampling_rate=rate)
            == tok.signal_to_text(signals[0], token_type=token_type, sampling_rate=rate))


def test_saved_tokenizer_json_gives_the_same_ids(tiny_tokenizers, saved, signals):
    tok = tiny_tokenizers
    assert (saved / "tokenizer.json").is_file()
    fast = Tokenizer.from_file(str(saved / "tokenizer.json"))
    assert fast.get_vocab_size() == len(tok)
    for signal in signals:
        text = tok.signal_to_text(signal, token_type=deepest(tok), sampling_rate=tok.sampling_rate)
        ids = tok(text).input_ids
        assert fast.encode(text).ids == ids
        assert fast.decode(ids) == text
    known, unk = tok.convert_ids_to_tokens(1), tok.unk_token_id
    beyond = f"<|bwav:L1_{tok.codebook_size}|>" if tok.is_rvq else f"<|bwav:{tok.codebook_size}|>"
    cases = {f"zzz {known}": [unk, 1], f"abc{known}def": [unk, 1, unk], beyond: [unk],
             f"hello world {known} more  words ": [unk, 1, unk],  # one unk per gap between tokens, not per word
             f" {known} {known}\n{known}\t": [1, 1, 1]}  # whitespace alone is no gap
    for text, expected in cases.items():
        assert fast.encode(text).ids == tok(text).input_ids == expected, text


# ---------------------------------------------------------------------------- the signal call


def test_signal_batch_has_one_id_per_frame(tiny_tokenizers, signals):
    tok, rate = tiny_tokenizers, tiny_tokenizers.sampling_rate
    batches = {}
    for token_type in {None, deepest(tok)}:
        batch = batches[token_type] = tok(signals=signals, sampling_rate=rate, token_type=token_type)
        assert set(batch) == {"input_ids", "attention_mask"}
        lengths = [ids_per_signal(tok, s.size, token_type) for s in signals]
        assert [len(ids) for ids in batch["input_ids"]] == lengths and all(lengths)
        assert batch["attention_mask"] == [[1] * n for n in lengths]
        assert all(0 <= i < tok.vocab_size for ids in batch["input_ids"] for i in ids)
    default = batches[None]["input_ids"]
    # reads batched together get the tokens each gets alone
    assert [tok.encode_signal(s, sampling_rate=rate) for s in signals] == default
    assert tok(signals=signals[1], sampling_rate=rate)["input_ids"] == default[1]
    if tok.is_rvq:  # residual levels: the first level of an L3 frame is the L1 token
        for deep, first in zip(batches[deepest(tok)]["input_ids"], default):
            assert deep[::tok.num_quantizers] == first


def test_signal_batch_pads_to_numpy(tiny_tokenizers, signals):
    tok = tiny_tokenizers
    unpadded = tok(signals=signals, sampling_rate=tok.sampling_rate)["input_ids"]
    batch = tok(signals=signals, sampling_rate=tok.sampling_rate, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    longest = max(len(i) for i in unpadded)
    assert isinstance(ids, np.ndarray) and ids.shape == mask.shape == (len(signals), longest)
    assert len({len(i) for i in unpadded}) > 1  # the batch is ragged, so padding had work to do
    for row, (expected, row_mask) in enumerate(zip(unpadded, mask)):
        n = len(expected)
        assert ids[row, :n].tolist() == expected and row_mask.tolist() == [1] * n + [0] * (longest - n)
        assert (ids[row, n:] == tok.pad_token_id).all()


def test_wrong_sampling_rate_names_both_rates(tiny_tokenizers, signals):
    tok = tiny_tokenizers
    wrong = tok.sampling_rate * 0.8
    calls = [lambda: tok(signals=signals[0], sampling_rate=wrong),
             lambda: tok(signals=signals, sampling_rate=wrong),
             lambda: tok.signal_to_text(signals[0], sampling_rate=wrong)]
    for call in calls:
        with pytest.raises(ValueError) as raised:
            call()
        assert raised.type is not ValueError  # a specific nst_hf error that still is a ValueError
        message = str(raised.value)
        assert f"{wrong:g} Hz" in message and f"{tok.sampling_rate:g} Hz" in message, message


def test_a_2d_array_is_a_batch_and_other_shapes_raise(tiny_tokenizers, signals):
    tok = tiny_tokenizers
    two_d = np.stack([signals[1], signals[1]])
    rate = tok.sampling_rate
    assert tok(signals=two_d, sampling_rate=rate)["input_ids"] == tok(signals=list(two_d), sampling_rate=rate)["input_ids"]
    for call in (lambda: tok(signals=two_d[None], sampling_rate=rate),
                 lambda: tok(signals=[signals[0], two_d], sampling_rate=rate),
                 lambda: tok.encode_signal(two_d, sampling_rate=rate)):
        with pytest.raises(ValueError, match=r"1-D"):
            call()


# ---------------------------------------------------------------------------- the text side


def test_text_ids_decode_round_trip(tiny_tokenizers, signals):
    tok, rate = tiny_tokenizers, tiny_tokenizers.sampling_rate
    for token_type in {None, deepest(tok)}:
        batch = tok(signals=signals, sampling_rate=rate, token_type=token_type)["input_ids"]
        for signal, expected in zip(signals, batch):
            text = tok.signal_to_text(signal, token_type=token_type, sampling_rate=rate)
            ids = tok(text).input_ids
            assert ids == expected
            assert tok.decode(ids) == text
            assert "".join(tok.convert_ids_to_tokens(ids)) == text
            assert tok.convert_tokens_to_ids(tok.tokenize(text)) == ids


def test_unknown_text_is_unk(tiny_tokenizers):
    tok = tiny_tokenizers
    known = tok.convert_ids_to_tokens(3)
    beyond = f"<|bwav:L1_{tok.codebook_size}|>" if tok.is_rvq else f"<|bwav:{tok.codebook_size}|>"
    unk = tok.unk_token_id
    assert tok("hello").input_ids == [unk]
    assert tok(f"hello {known} world {beyond}").input_ids == [unk, 3, unk, unk]
    assert tok(f"{known} {known}\n{known}").input_ids == [3, 3, 3]  # whitespace between tokens is not text
    assert tok.convert_tokens_to_ids("<|bwav:nonsense|>") == unk


def test_vocabulary_is_codes_then_special_tokens(tiny_tokenizers):
    tok = tiny_tokenizers
    assert tok.vocab_size == tok.codebook_size * tok.num_quantizers
    specials = [getattr(tok, name + "_id") for name in SPECIAL_ATTRIBUTES]
    assert len(tok.all_special_tokens) == len(set(specials)) == 4
    assert len(tok) == tok.vocab_size + len(tok.all_special_tokens) == len(tok.get_vocab())
    assert sorted(specials) == list(range(tok.vocab_size, len(tok)))
    assert tok.convert_ids_to_tokens(tok.vocab_size - 1) == (
        f"<|bwav:L{tok.num_quantizers}_{tok.codebook_size - 1}|>" if tok.is_rvq else f"<|bwav:{tok.codebook_size - 1}|>")


SIGNAL_ARGUMENTS = [
    {"padding": True}, {"padding": "longest"}, {"padding": "max_length", "max_length": 120}, {"padding": False},
    {"truncation": True, "max_length": 50}, {"padding": True, "pad_to_multiple_of": 16},
    {"padding": True, "padding_side": "left"}, {"return_attention_mask": False},
    {"padding": True, "return_tensors": "np"}, {"padding": True, "return_tensors": "pt"}, {"return_length": True},
    {"padding": "max_length", "truncation": True, "max_length": 64, "return_tensors": "np"},
]


@pytest.mark.parametrize("kwargs", SIGNAL_ARGUMENTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_every_text_argument_means_the_same_for_signals(tiny_tokenizers, make_pa_signal, kwargs):
    """``tok(signals=...)`` pads, truncates and converts exactly as ``tok(texts)`` does for the same tokens."""
    tok = tiny_tokenizers
    signals = [make_pa_signal(2600, seed=1), make_pa_signal(3100, seed=2),
               np.full(3000, 90.0, np.float32)]  # a constant signal has no tokens
    texts = [tok.signal_to_text(s, sampling_rate=tok.sampling_rate) for s in signals]
    assert texts[0] and texts[1] and texts[2] == ""
    got = tok(signals=signals, sampling_rate=tok.sampling_rate, **kwargs)
    want = tok(texts, **kwargs)
    assert set(got.keys()) == set(want.keys())
    for key in want:
        a, b = got[key], want[key]
        if hasattr(b, "shape"):
            assert type(a) is type(b) and tuple(a.shape) == tuple(b.shape) and (a == b).all(), key
        else:
            assert a == b, key
    single = tok(signals=signals[0], sampling_rate=tok.sampling_rate, **kwargs)
    assert list(single.keys()) == list(tok(texts[0], **kwargs).keys())


def test_no_limit_follows_transformers_convention_and_max_length_padding_cannot_explode(tiny_vq, make_pa_signal,
                                                                                       tmp_path):
    """model_max_length is transformers' "no limit" (1e30): padding="max_length" without max_length does not try
    to allocate 2**31 positions, for text or signals, and the value survives saving; a folder saved with the old
    2**31 - 1 loads with the new value."""
    from transformers.tokenization_utils_base import LARGE_INTEGER

    assert tiny_vq.model_max_length > LARGE_INTEGER
    assert tiny_vq("<|bwav:1|>", padding="max_length").input_ids == [1]
    signals = [make_pa_signal(2600), make_pa_signal(3000, seed=1)]
    ids = tiny_vq(signals=signals, sampling_rate=tiny_vq.sampling_rate, padding="max_length")["input_ids"]
    assert [len(i) for i in ids] == [len(tiny_vq.encode_signal(s, sampling_rate=tiny_vq.sampling_rate)) for s in signals]
    tiny_vq.save_pretrained(tmp_path)
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    assert config["model_max_length"] > LARGE_INTEGER
    config["model_max_length"] = 2**31 - 1
    config_path.write_text(json.dumps(config))
    assert nst_hf.NstVQTokenizer.from_pretrained(tmp_path).model_max_length == tiny_vq.model_max_length


def test_a_missing_sampling_rate_warns_once_naming_the_rate(tiny_vq, make_pa_signal, caplog):
    import copy

    tok = copy.deepcopy(tiny_vq)
    signal = make_pa_signal(3000)
    with caplog.at_level("WARNING", logger="nst_hf"):
        first = tok(signals=signal)["input_ids"]
        tok(signals=[signal, signal])
    warnings = [r.getMessage() for r in caplog.records if "no sampling_rate" in r.getMessage()]
    assert len(warnings) == 1 and f"{tok.sampling_rate:g} Hz" in warnings[0]
    assert first == tok(signals=signal, sampling_rate=tok.sampling_rate)["input_ids"]


@pytest.mark.slow
def test_the_model_cards_snippet_runs_when_pasted(tiny_tokenizers, tmp_path):
    """Each kind's card: its code block, pasted as it is (only the reads file named), loads the saved tokenizer and
    tokenizes the shipped sample file."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    folder = tmp_path / "tok"
    tiny_tokenizers.save_pretrained(folder, repo_id=str(folder))
    card = (folder / "README.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    sample = Path(__file__).resolve().parents[1] / "examples" / "data" / "sample.pod5"
    assert '"reads.pod5"' in block and f'from_pretrained("{folder}")' in block
    script = block.replace('"reads.pod5"', repr(str(sample))) + "\nprint(len(ids), text[:7])\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    count, start = result.stdout.split()[-2:]
    assert int(count) > 0 and start == "<|bwav:"
