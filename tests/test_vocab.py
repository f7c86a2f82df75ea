"""nst_hf.tokenizers.vocab: token text, token lists and ids of codes (SPEC §3), and the token regex."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nst_hf.tokenizers.vocab import (SPECIAL_TOKENS, TOKEN_PATTERN, TOKEN_RE, codes_to_ids, codes_to_text,
                                     codes_to_tokens)


def _codes(rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.int64)


def _parse(text: str) -> list[tuple[int | None, int]]:
    """(level or None, code) per token, requiring the text to be nothing but tokens."""
    matches = list(TOKEN_RE.finditer(text))
    assert "".join(m.group(0) for m in matches) == text
    return [(None if m.group(1) is None else int(m.group(1)), int(m.group(2))) for m in matches]


# ---------------------------------------------------------------- text and tokens


def test_vq_text_is_one_token_per_frame_without_separators():
    assert codes_to_text(_codes([[5808], [702]]), rvq=False) == "<|bwav:5808|><|bwav:702|>"
    assert codes_to_tokens(_codes([[5808], [702]]), rvq=False) == ["<|bwav:5808|>", "<|bwav:702|>"]


def test_rvq_text_interleaves_levels_frame_by_frame():
    codes = _codes([[5336, 7466], [1, 0]])
    expected = ["<|bwav:L1_5336|>", "<|bwav:L2_7466|>", "<|bwav:L1_1|>", "<|bwav:L2_0|>"]
    assert codes_to_tokens(codes, rvq=True) == expected
    assert codes_to_text(codes, rvq=True) == "".join(expected)


def test_rvq_single_level_still_carries_the_level_prefix():
    assert codes_to_text(_codes([[3], [4]]), rvq=True) == "<|bwav:L1_3|><|bwav:L1_4|>"


def test_rvq_text_of_the_first_k_levels_of_a_wider_array():
    codes = np.arange(24, dtype=np.int64).reshape(6, 4)
    first_two = codes[:, :2]  # a non-contiguous view, as token_type="L2" would take
    expected = "".join(f"<|bwav:L1_{a}|><|bwav:L2_{b}|>" for a, b in first_two.tolist())
    assert codes_to_text(first_two, rvq=True) == expected


def test_tokens_join_to_the_text_for_random_codes():
    rng = np.random.default_rng(3)
    for rvq, levels in [(False, 1), (True, 1), (True, 3), (True, 8)]:
        codes = rng.integers(0, 8192, size=(int(rng.integers(1, 60)), levels))
        tokens = codes_to_tokens(codes, rvq)
        assert "".join(tokens) == codes_to_text(codes, rvq)
        assert len(tokens) == codes.size
        assert all(TOKEN_RE.fullmatch(token) for token in tokens)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.int16])
def test_text_shows_plain_decimal_codes_for_any_integer_dtype(dtype):
    codes = np.array([[0, 9], [10, 255]], dtype=dtype)
    assert codes_to_text(codes, rvq=True) == "<|bwav:L1_0|><|bwav:L2_9|><|bwav:L1_10|><|bwav:L2_255|>"
    assert codes_to_text(codes[:, :1], rvq=False) == "<|bwav:0|><|bwav:10|>"


def test_text_round_trips_through_the_regex_to_the_codes():
    rng = np.random.default_rng(4)
    for levels in (1, 2, 4):
        codes = rng.integers(0, 1024, size=(37, levels))
        parsed = _parse(codes_to_text(codes, rvq=True))
        assert [level for level, _ in parsed] == list(range(1, levels + 1)) * 37
        assert np.array_equal(np.array([code for _, code in parsed]).reshape(37, levels), codes)
    codes = rng.integers(0, 8192, size=(50, 1))
    parsed = _parse(codes_to_text(codes, rvq=False))
    assert all(level is None for level, _ in parsed)
    assert [code for _, code in parsed] == codes[:, 0].tolist()


@pytest.mark.parametrize("rvq, levels", [(False, 1), (True, 1), (True, 4)])
def test_empty_codes_give_empty_text_tokens_and_ids(rvq, levels):
    codes = np.empty((0, levels), dtype=np.int64)
    assert codes_to_text(codes, rvq) == ""
    assert codes_to_tokens(codes, rvq) == []
    ids = codes_to_ids(codes, 1024, rvq)
    assert ids.shape == (0,) and ids.dtype == np.int64


# ---------------------------------------------------------------- ids


def test_vq_ids_are_the_codes_as_int64():
    ids = codes_to_ids(np.array([[5808], [702], [0]], dtype=np.int32), 8192, rvq=False)
    assert ids.dtype == np.int64
    assert ids.tolist() == [5808, 702, 0]


def test_rvq_ids_are_level_times_k_plus_code_in_token_order():
    rng = np.random.default_rng(5)
    for levels, k in [(1, 1024), (2, 1024), (4, 1024), (3, 8192)]:
        codes = rng.integers(0, k, size=(23, levels))
        expected = [level * k + int(codes[t, level]) for t in range(codes.shape[0]) for level in range(levels)]
        ids = codes_to_ids(codes, k, rvq=True)
        assert ids.dtype == np.int64 and ids.tolist() == expected
        assert ids.min() >= 0 and ids.max() < levels * k


def test_rvq_ids_do_not_overflow_narrow_code_dtypes():
    codes = np.array([[30000, 30000, 30000]], dtype=np.int16)
    assert codes_to_ids(codes, 32000, rvq=True).tolist() == [30000, 62000, 94000]


def test_ids_follow_the_tokens_one_to_one():
    codes = _codes([[7, 1], [0, 1023]])
    pairs = list(zip(codes_to_tokens(codes, rvq=True), codes_to_ids(codes, 1024, rvq=True).tolist()))
    assert pairs == [("<|bwav:L1_7|>", 7), ("<|bwav:L2_1|>", 1025), ("<|bwav:L1_0|>", 0), ("<|bwav:L2_1023|>", 2047)]


# ---------------------------------------------------------------- regex


GOOD = ["<|bwav:0|>", "<|bwav:5808|>", "<|bwav:L1_5336|>", "<|bwav:L2_7466|>", "<|bwav:L12_0|>"]
MALFORMED = ["<|bwav:|>", "<|bwav:L1_|>", "<|bwav:L_5|>", "<|bwav:l1_5|>", "<|bwav:-5|>", "<|bwav:+5|>",
             "<|bwav:5.0|>", "<|bwav:5 |>", "<|bwav: 5|>", "<| bwav:5|>", "<|bwav:a5|>", "<|bwav:5a|>",
             "<|bwav:L1-5|>", "<|bwav:L1_L2_5|>", "<|bwav:1_5|>", "<|BWAV:5|>", "<bwav:5>", "<|bwav:5|",
             "|bwav:5|>", "<|bwav:5>", "<|bwav5|>", "<|bwav_5|>", "<|bwav:0x1f|>", "bwav:5", "",
             "<|bwav_bos|>", "<|bwav_eos|>", "<|bwav_unk|>", "<|bwav_pad|>"]


@pytest.mark.parametrize("token", GOOD)
def test_regex_and_pattern_accept_well_formed_tokens(token):
    match = TOKEN_RE.fullmatch(token)
    assert match is not None and re.fullmatch(TOKEN_PATTERN, token)
    level, code = token[len("<|bwav:"):-2].split("_") if "_" in token else (None, token[7:-2])
    assert match.group(1) == (None if level is None else level[1:])
    assert match.group(2) == code


def test_regex_and_pattern_reject_malformed_tokens():
    for token in MALFORMED:
        assert TOKEN_RE.fullmatch(token) is None, token
        assert re.fullmatch(TOKEN_PATTERN, token) is None, token


def test_regex_finds_only_whole_tokens_inside_noise():
    text = "x<|bwav:5|><|bwav:|><|bwav:L2_9|> <|bwav:7|>|><|bwav:L1_|><|bwav:3"
    assert [m.group(0) for m in TOKEN_RE.finditer(text)] == ["<|bwav:5|>", "<|bwav:L2_9|>", "<|bwav:7|>"]
    assert re.findall(TOKEN_PATTERN, text) == ["<|bwav:5|>", "<|bwav:L2_9|>", "<|bwav:7|>"]


def test_pattern_splits_text_the_same_in_the_tokenizers_library():
    """TOKEN_PATTERN also drives the tokenizer.json pre-tokenizer (Oniguruma), which must agree with ``re``."""
    tokenizers = pytest.importorskip("tokenizers")
    split = tokenizers.pre_tokenizers.Split(tokenizers.Regex(TOKEN_PATTERN), behavior="isolated")
    codes = _codes([[5336, 7466], [1, 0]])
    text = codes_to_text(codes, rvq=True) + "<|bwav:12|>"
    pieces = [piece for piece, _ in split.pre_tokenize_str(text)]
    assert pieces == re.findall(TOKEN_PATTERN, text)


@pytest.mark.parametrize("token", ["<|bwav:\u0663|>", "<|bwav:\uff15|>", "<|bwav:L\u0661_5|>"])
def test_regex_rejects_non_ascii_digits(token):
    assert TOKEN_RE.fullmatch(token) is None
    assert re.fullmatch(TOKEN_PATTERN, token) is None


# ---------------------------------------------------------------- special tokens


def test_special_tokens_are_the_four_distinct_bwav_specials():
    assert set(SPECIAL_TOKENS) == {"bos_token", "eos_token", "unk_token", "pad_token"}
    assert SPECIAL_TOKENS["bos_token"] == "<|bwav_bos|>" and SPECIAL_TOKENS["pad_token"] == "<|bwav_pad|>"
    values = list(SPECIAL_TOKENS.values())
    assert len(set(values)) == len(values)
    for token in values:
        assert re.fullmatch(r"<\|bwav_[a-z]+\|>", token), token
        assert TOKEN_RE.search(token) is None  # never confused with a code token


# ---------------------------------------------------------------- the tokenizers' vocabularies


def test_vq_vocabulary_is_exactly_the_code_tokens_plus_specials(vq1):
    k = vq1.codebook_size
    vocab = vq1.get_vocab()
    assert set(vocab) == {f"<|bwav:{c}|>" for c in range(k)} | set(SPECIAL_TOKENS.values())
    codes = np.arange(k, dtype=np.int64).reshape(-1, 1)
    assert [vocab[t] for t in codes_to_tokens(codes, rvq=False)] == codes_to_ids(codes, k, rvq=False).tolist()
    # specials come after the codes: ids below vocab_size are codes (decode_to_signal drops the rest)
    assert sorted(vocab[t] for t in SPECIAL_TOKENS.values()) == list(range(k, k + len(SPECIAL_TOKENS)))


def test_rvq_vocabulary_ids_agree_with_codes_to_ids(rvq):
    k, levels = rvq.codebook_size, rvq.num_quantizers
    vocab = rvq.get_vocab()
    assert set(vocab) == ({f"<|bwav:L{level}_{c}|>" for level in range(1, levels + 1) for c in range(k)}
                          | set(SPECIAL_TOKENS.values()))
    codes = np.stack([np.arange(k)] * levels, axis=1)
    assert [vocab[t] for t in codes_to_tokens(codes, rvq=True)] == codes_to_ids(codes, k, rvq=True).tolist()


def test_tokenizer_maps_non_token_text_to_unk_not_characters(vq1):
    ids = vq1.convert_tokens_to_ids(vq1._tokenize("<|bwav:5|>hello<|bwav:7|>"))
    assert ids == [5, vq1.unk_token_id, 7]


def test_text_is_right_for_codes_past_every_table_size_and_any_level_count():
    """The token strings come from cached tables that grow with the largest code: codes at and past each
    power-of-two edge, and a new level count after an old one, still give the formatted tokens."""
    codes = np.array([[0], [1023], [1024], [2047], [2048], [70_000], [5]], dtype=np.int64)
    assert codes_to_text(codes, rvq=False) == "".join(f"<|bwav:{c}|>" for c in codes[:, 0].tolist())
    assert codes_to_text(codes[:2], rvq=False) == "<|bwav:0|><|bwav:1023|>"  # the grown table still serves
    for levels in (2, 5, 3):
        wide = np.arange(levels * 4, dtype=np.int64).reshape(4, levels) * 999
        expected = "".join(f"<|bwav:L{i % levels + 1}_{c}|>" for i, c in enumerate(wide.reshape(-1).tolist()))
        assert codes_to_text(wide, rvq=True) == expected


def test_negative_codes_are_refused_rather_than_read_from_the_table_end():
    with pytest.raises(ValueError, match="non-negative"):
        codes_to_text(np.array([[3], [-1]]), rvq=False)
