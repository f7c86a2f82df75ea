"""nst_hf.output: JSON lines are the text json.dumps gives, also where long token text skips the escaping scan."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nst_hf.output import AtomicJsonlWriter, json_line, read_jsonl
from nst_hf.tokenizers.vocab import codes_to_text

TOKEN_TEXT = codes_to_text(np.random.default_rng(0).integers(0, 8192, size=(3000, 1)), rvq=False)


@pytest.mark.parametrize("odd", ['"', "\\", "\x00", "\x1f", "\n", "\t", "é", "\u2028", "\x7f", "😀"])
@pytest.mark.parametrize("where", [0, 1500, -1])
def test_a_long_string_with_a_character_to_escape_is_escaped_wherever_it_is(odd, where):
    text = TOKEN_TEXT[:where] + odd + TOKEN_TEXT[where:] if where >= 0 else TOKEN_TEXT + odd
    record = {"id": "read-1", "text": text}
    line = json_line(record)
    assert line == json.dumps(record, ensure_ascii=False) + "\n"
    assert json.loads(line) == record


def test_rows_as_the_pipeline_writes_them_are_the_text_json_dumps_gives():
    records = [{"id": "0000173c-bf67", "text": TOKEN_TEXT},
               {"id": 'odd "id" \\ é', "text": TOKEN_TEXT, "input_ids": list(range(7))},
               {"id": "short", "text": "<|bwav:1|>"}, {}, {"text": TOKEN_TEXT, "n": 3.5, "none": None},
               {1: TOKEN_TEXT}]  # a non-string key: json.dumps turns it into "1"
    for record in records:
        assert json_line(record) == json.dumps(record, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.jsonl.gz"])
def test_the_writer_reads_back_what_it_was_given(tmp_path, name):
    records = [{"id": "a", "text": TOKEN_TEXT}, {"id": "b\n", "text": TOKEN_TEXT + "\x01"}]
    with AtomicJsonlWriter(tmp_path / name) as out:
        for record in records:
            out.write(record)
    assert read_jsonl(tmp_path / name) == records


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_parts_are_appended_whole_and_in_order(tmp_path, monkeypatch, kernel_copy):
    import os

    from nst_hf.output import append_file

    if not kernel_copy:  # where the kernel cannot copy to the output, the bytes go through a buffer
        monkeypatch.setattr(os, "sendfile", lambda *args: (_ for _ in ()).throw(OSError(22, "not here")))
    contents = [os.urandom(3_000_000), b"", b"tail\n"]
    for number, data in enumerate(contents):
        (tmp_path / f"part{number}").write_bytes(data)
    with open(tmp_path / "out", "wb") as handle:
        handle.write(b"head\n")
        for number in range(len(contents)):
            append_file(tmp_path / f"part{number}", handle)
        handle.write(b"end\n")
    assert (tmp_path / "out").read_bytes() == b"head\n" + b"".join(contents) + b"end\n"
