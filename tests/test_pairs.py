"""Paired signal–base corpora (issue 12): basecall reading, chunking, the pairs run, datasets, evaluate."""

from __future__ import annotations

import array
import bisect
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, _require

pysam = pytest.importorskip("pysam", reason="pysam is an install requirement of nst_hf")

PAIRED = SHARED / "data" / "paired" / "squigualiser_r9"


@pytest.fixture(scope="module")
def paired() -> Path:
    return _require(PAIRED)


@pytest.fixture(scope="module")
def sam_records(paired) -> list[dict]:
    """The shared SAM's records as plain values, read by pysam here (not through nst_hf)."""
    out = []
    with pysam.AlignmentFile(str(paired / "moves.sam"), "r", check_sq=False) as handle:
        for record in handle.fetch(until_eof=True):
            mv = list(record.get_tag("mv"))
            out.append({"id": record.query_name, "seq": record.query_sequence, "qual": record.query_qualities,
                        "stride": mv[0], "moves": mv[1:], "ts": record.get_tag("ts"), "ns": record.get_tag("ns"),
                        "tags": record.get_tags(with_value_type=True)})
    return out


@pytest.fixture(scope="module")
def reads(paired) -> dict:
    from nst_hf.io import open_reads

    with open_reads(paired / "reads.blow5") as source:
        return {record.read_id: record for record in source}


def hand_starts(record: dict) -> list[int]:
    """Base i starts at ts + stride × (index of the i-th 1), counted by a plain loop."""
    return [record["ts"] + record["stride"] * block for block, move in enumerate(record["moves"]) if move == 1]


def write_alignments(path: Path, records: list[dict], mapped: bool = False) -> None:
    """Write ``records`` (dicts: id, seq, qual, flag, tags, cigar) as SAM/BAM with pysam."""
    header = {"HD": {"VN": "1.6", "SO": "unknown"}}
    if mapped:
        header["SQ"] = [{"SN": "chr1", "LN": 50_000_000}]
    mode = "wb" if path.suffix == ".bam" else ("wc" if path.suffix == ".cram" else "w")
    with pysam.AlignmentFile(str(path), mode, header=header) as out:
        for i, rec in enumerate(records):
            segment = pysam.AlignedSegment(out.header)
            segment.query_name = rec["id"]
            segment.query_sequence = rec["seq"]
            segment.flag = rec.get("flag", 4)
            if rec.get("qual") is not None:
                segment.query_qualities = rec["qual"]
            if mapped and not segment.flag & 4:
                segment.reference_id = 0
                segment.reference_start = 1000 * (i + 1)
                segment.mapping_quality = 60
                segment.cigarstring = rec.get("cigar", f"{len(rec['seq'])}M")
            tags = []
            for name, value, kind in rec["tags"]:
                if name == "mv":
                    value = array.array("b", value)
                    kind = None
                tags.append((name, value) if kind is None else (name, value, kind))
            segment.set_tags(tags)
            out.write(segment)


def reverse_complement(seq: str) -> str:
    return seq.translate(str.maketrans("ACGT", "TGCA"))[::-1]


def with_moves(record: dict, stride: int, moves, ts: int, ns: int, extra=()) -> list:
    tags = [t for t in record["tags"] if t[0] not in ("mv", "ts", "ns", "pi", "sp")]
    return tags + [("mv", [stride, *moves], "B"), ("ts", ts, "i"), ("ns", ns, "i"), *extra]


# ---------------------------------------------------------------------------------------------- reading


def test_move_tables_give_every_bases_start_sample(paired, sam_records, reads):
    from nst_hf import open_basecalls

    calls = open_basecalls(paired / "moves.sam")
    assert len(calls) == len(sam_records) == 40
    for record in sam_records:
        call = calls[record["id"]]
        assert call.sequence == record["seq"]
        assert call.base_starts.tolist() == hand_starts(record)
        assert call.called_end == record["ts"] + record["stride"] * len(record["moves"])
        assert call.num_samples == reads[record["id"]].num_samples  # ns = the signal's length, checked
        assert calls.for_signal(record["id"]) == [record["id"]]
        call.check_signal(reads[record["id"]].num_samples)
    with pytest.raises(KeyError):
        calls["not-a-read"]


def test_mapped_bam_turns_reverse_strand_back_and_skips_secondary_and_supplementary(tmp_path, paired, sam_records):
    from nst_hf import open_basecalls

    derived = []
    for i, rec in enumerate(sam_records):
        reverse = i % 2 == 1
        primary = dict(rec, flag=16 if reverse else 0,
                       seq=reverse_complement(rec["seq"]) if reverse else rec["seq"],
                       qual=rec["qual"][::-1] if reverse else rec["qual"])
        derived.append(primary)
        if i % 5 == 0:  # a secondary alignment (another SEQ) and a hard-clipped supplementary one
            derived.append(dict(primary, flag=primary["flag"] | 0x100, seq=primary["seq"][::-1]))
            cut = len(rec["seq"]) // 3
            derived.append(dict(primary, flag=primary["flag"] | 0x800, seq=primary["seq"][:cut],
                                qual=primary["qual"][:cut], cigar=f"{cut}M{len(rec['seq']) - cut}H"))
    duplex = dict(sam_records[0], id=f"{sam_records[0]['id']};{sam_records[1]['id']}", flag=4)
    duplex["tags"] = [t for t in sam_records[0]["tags"] if t[0] != "mv"] + [("dx", 1, "i")]
    derived.append(duplex)
    bam = tmp_path / "mapped.bam"
    write_alignments(bam, derived, mapped=True)
    calls = open_basecalls(bam)
    assert len(calls) == 40
    assert calls.skipped_records == {"secondary": 8, "supplementary": 8, "duplex": 1}
    for rec in sam_records:
        assert calls[rec["id"]].sequence == rec["seq"]  # the basecaller's orientation, not the reference's
        assert calls[rec["id"]].base_starts.tolist() == hand_starts(rec)


def test_cram_and_fastq_are_read_too(tmp_path, sam_records):
    from nst_hf import open_basecalls

    cram = tmp_path / "calls.cram"
    write_alignments(cram, sam_records[:5])
    fastq = tmp_path / "calls.fastq"
    fastq.write_text("".join(f"@{r['id']} runid=x\n{r['seq']}\n+\n{'I' * len(r['seq'])}\n" for r in sam_records[5:8]))
    calls = open_basecalls([cram, fastq])
    assert len(calls) == 8
    assert calls[sam_records[0]["id"]].base_starts.tolist() == hand_starts(sam_records[0])
    fq = calls[sam_records[6]["id"]]
    assert fq.sequence == sam_records[6]["seq"] and not fq.has_moves


@pytest.mark.parametrize("problem", ["ones_not_bases", "ns_not_signal", "moves_past_ns", "hard_clipped"])
def test_a_bad_record_is_a_per_read_error_naming_the_read(tmp_path, paired, sam_records, reads, problem):
    from nst_hf import open_basecalls
    from nst_hf.errors import InvalidReadError

    rec = dict(sam_records[3])
    if problem == "ones_not_bases":
        rec["seq"] = rec["seq"][:-2]
        rec["qual"] = rec["qual"][:-2]
    elif problem == "ns_not_signal":
        rec["tags"] = with_moves(rec, rec["stride"], rec["moves"], rec["ts"], rec["ns"] + 100)
    elif problem == "moves_past_ns":
        rec["tags"] = with_moves(rec, rec["stride"], rec["moves"] + [0] * 50_000, rec["ts"], rec["ns"])
    else:
        rec.update(flag=0, seq=rec["seq"][:-10], qual=rec["qual"][:-10], cigar=f"{len(rec['seq']) - 10}M10H")
    sam = tmp_path / "bad.sam"
    write_alignments(sam, [sam_records[0], rec], mapped=problem == "hard_clipped")
    calls = open_basecalls(sam)
    calls[sam_records[0]["id"]]  # the good record next to it still reads
    with pytest.raises(InvalidReadError, match=rec["id"]) as caught:
        calls[rec["id"]].check_signal(reads[rec["id"]].num_samples)
    expected = {"ones_not_bases": "marks .* base starts but the sequence has", "ns_not_signal": "samples \\(ns\\)",
                "moves_past_ns": "more than the read's", "hard_clipped": "hard-clipped"}[problem]
    assert caught.match(expected)


# ---------------------------------------------------------------------------------------------- chunking


def test_chunk_sizes_must_be_whole_frames():
    from nst_hf.pairs import check_chunking

    check_chunking(4000, 500, 5)
    check_chunking(0, 0, 5)
    with pytest.raises(ValueError, match="not a multiple of the tokenizer's 5 samples per token.*4000 or 4005"):
        check_chunking(4003, 0, 5)
    with pytest.raises(ValueError, match="chunk overlap 12 is not a multiple"):
        check_chunking(4000, 12, 8)
    with pytest.raises(ValueError, match="smaller than the chunk size"):
        check_chunking(400, 400, 5)


def test_chunks_tile_the_read_and_overlaps_repeat_their_bases():
    from nst_hf.pairs import PlacedCall, chunk_rows

    rng = np.random.default_rng(0)
    starts = np.cumsum(rng.integers(3, 30, size=300)) + 37
    bases = "".join(rng.choice(list("ACGT"), size=starts.size))
    end = int(starts[-1]) + 50
    placed = PlacedCall("r", bases, starts, int(starts[-1]) + 9, (0, end))
    codes = rng.integers(0, 100, size=(-(-end // 5), 1))
    first = int(starts[0]) // 5 * 5
    assert first % 5 == 0 and first < starts[0] < first + 5
    whole = chunk_rows(codes, placed, 5, 0, 0)
    assert len(whole) == 1 and whole[0]["chunk_start"] == first and whole[0]["chunk_size"] == end - first
    assert whole[0]["bases"] == bases
    plain = chunk_rows(codes, placed, 5, 400, 0)
    assert "".join(r["bases"] for r in plain) == bases
    assert [r["chunk_start"] for r in plain] == list(range(first, end, 400))
    assert plain[-1]["chunk_start"] + plain[-1]["chunk_size"] == end
    lapped = chunk_rows(codes, placed, 5, 400, 100)
    assert [r["chunk_start"] for r in lapped][:3] == [first, first + 300, first + 600]
    for row in lapped:
        c0, c1 = row["chunk_start"], row["chunk_start"] + row["chunk_size"]
        inside = [i for i, s in enumerate(starts) if c0 <= s < c1]
        assert row["bases"] == "".join(bases[i] for i in inside)
        assert row["base_starts"] == [(int(starts[i]) - c0) // 5 for i in inside]
        assert row["text"] == "".join(f"<|bwav:{c}|>" for c in codes[c0 // 5:-(-c1 // 5), 0])
        assert row["id"] == f"r:{c0}"


# ---------------------------------------------------------------------------------------------- the run


def rows_by_read(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["read_id"], []).append(row)
    return out


def check_rows_against_whole_reads(rows, tokenizer, sam_records, reads, chunk_size, resample):
    """Per read: bases equal the basecaller's, chunks tile it, each text is the slice of tokenize_data on the
    whole read, and base_starts are right."""
    from fractions import Fraction

    spt = tokenizer.samples_per_token
    by_read = rows_by_read(rows)
    assert set(by_read) == {r["id"] for r in sam_records}
    for rec in sam_records:
        record = reads[rec["id"]]
        ratio = Fraction(tokenizer.sampling_rate / record.sampling_rate).limit_denominator(1000) if resample \
            else Fraction(1)
        tokens = tokenizer.tokenize_data(record.signal_pa, sampling_rate=record.sampling_rate, resample=resample)
        tokens = tokens if isinstance(tokens, list) else [f"<|{t}" for t in tokens.split("<|")[1:]]
        per_frame = tokenizer.num_levels() if tokenizer.is_rvq else 1
        starts = [(s * ratio.numerator + ratio.denominator // 2) // ratio.denominator for s in hand_starts(rec)]
        chunks = by_read[rec["id"]]
        assert "".join(c["bases"] for c in chunks) == rec["seq"]
        assert chunks[0]["chunk_start"] == starts[0] // spt * spt
        grid_end = math.ceil(record.num_samples * ratio)
        assert chunks[-1]["chunk_start"] + chunks[-1]["chunk_size"] == grid_end
        done = 0
        for chunk in chunks:
            c0, size = chunk["chunk_start"], chunk["chunk_size"]
            assert c0 % spt == 0 and (size % spt == 0 or chunk is chunks[-1])
            if chunk_size:
                assert size == chunk_size or chunk is chunks[-1]
            f0, f1 = c0 // spt, math.ceil((c0 + size) / spt)
            assert chunk["text"] == "".join(tokens[f0 * per_frame:f1 * per_frame])
            mine = [s for s in starts if c0 <= s < c0 + size]
            assert chunk["base_starts"] == [(s - c0) // spt for s in mine]
            assert chunk["bases"] == rec["seq"][done:done + len(mine)]
            done += len(mine)


@pytest.mark.slow
def test_default_tokenizer_pairs_every_shared_read_by_cli_and_datasets(tmp_path, paired, sam_records, reads):
    from nst_hf.auto import load_tokenizer
    from nst_hf.cli import main
    from nst_hf.hf_datasets import pair_batch, reads_to_dataset
    from nst_hf.output import read_jsonl

    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(paired / "reads.blow5"), "--basecalls", str(paired / "moves.sam"), "-o", str(out),
                 "--resample", "--chunk-size", "2000"]) == 0
    rows = read_jsonl(out)
    tok = load_tokenizer("default")
    check_rows_against_whole_reads(rows, tok, sam_records, reads, 2000, resample=True)
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["reads"] == 40 and report["rows"] == len(rows) and report["skipped"] == []
    assert report["bases"] == sum(len(r["seq"]) for r in sam_records)

    dataset = reads_to_dataset(paired / "reads.blow5", basecalls=paired / "moves.sam", cache_dir=str(tmp_path / "c"))
    mapped = dataset.map(pair_batch, batched=True, batch_size=7, remove_columns=dataset.column_names,
                         fn_kwargs={"tokenizer": tok, "chunk_size": 2000, "resample": True})
    assert [dict(r) for r in mapped.select_columns(list(rows[0]))] == rows


@pytest.mark.parametrize("kind", ["tiny_rvq", "tiny_kmeans"])
def test_rvq_frames_and_kmeans_windows_pair_like_vq(request, tmp_path, paired, sam_records, reads, kind):
    from nst_hf.hf_datasets import pair_batch, reads_to_dataset
    from nst_hf.io.basecalls import open_basecalls

    tok = request.getfixturevalue(kind)
    resample = tok.sampling_rate != 4000.0
    dataset = reads_to_dataset(paired / "reads.blow5", cache_dir=str(tmp_path / "c"))
    if kind == "tiny_rvq":  # 5 kHz: resampled, and ~8x the encoder cost of VQ: the 3 shortest reads
        keep = sorted(reads, key=lambda read_id: reads[read_id].num_samples)[:3]
        dataset = dataset.filter(lambda row: row["read_id"] in keep)
        sam_records = [r for r in sam_records if r["id"] in keep]
    calls = open_basecalls(paired / "moves.sam")
    chunk = 40 * tok.samples_per_token
    mapped = dataset.map(pair_batch, batched=True, batch_size=4, remove_columns=dataset.column_names,
                         fn_kwargs={"tokenizer": tok, "basecalls": calls, "chunk_size": chunk,
                                    "token_type": "L2" if tok.is_rvq else None, "resample": resample})
    tok_levels = tok.num_levels("L2") if tok.is_rvq else 1
    rows = [dict(r) for r in mapped]
    if tok.is_rvq:
        assert all(r["text"].count("<|") == tok_levels * math.ceil(r["chunk_size"] / tok.samples_per_token)
                   for r in rows)
        original = tok.default_token_type
        tok.default_token_type = "L2"  # so that tokenize_data in the check emits the same levels
        try:
            check_rows_against_whole_reads(rows, tok, sam_records, reads, chunk, resample)
        finally:
            tok.default_token_type = original
    else:
        check_rows_against_whole_reads(rows, tok, sam_records, reads, chunk, resample)


def test_parquet_and_dataset_outputs_hold_the_same_rows(tmp_path, paired, tiny_kmeans):
    import datasets
    import pyarrow.parquet as pq

    from nst_hf.output import read_jsonl
    from nst_hf.pipeline import pair_inputs

    args = (paired / "reads.blow5", paired / "moves.sam")
    pair_inputs(*args, tmp_path / "p.jsonl.gz", tokenizer=tiny_kmeans, chunk_size=800, chunk_overlap=160)
    pair_inputs(*args, tmp_path / "p.parquet", tokenizer=tiny_kmeans, chunk_size=800, chunk_overlap=160,
                fmt="parquet")
    pair_inputs(*args, tmp_path / "p_ds", tokenizer=tiny_kmeans, chunk_size=800, chunk_overlap=160, fmt="dataset")
    rows = read_jsonl(tmp_path / "p.jsonl.gz")
    assert len(rows) > 40 and list(rows[0]) == ["id", "read_id", "chunk_start", "chunk_size", "text", "bases",
                                                "base_starts"]
    assert pq.read_table(tmp_path / "p.parquet").to_pylist() == rows
    assert [dict(r) for r in datasets.load_from_disk(str(tmp_path / "p_ds"))] == rows
    assert len({r["id"] for r in rows}) == len(rows)


def test_split_reads_lie_at_their_offset_in_the_parents_signal(tmp_path, paired, sam_records, reads, tiny_kmeans):
    from nst_hf.output import read_jsonl
    from nst_hf.pipeline import pair_inputs

    parent = sam_records[2]
    cut = len(parent["moves"]) // 2  # split at a block boundary: A keeps ts and the first blocks, B the rest
    ones_a = sum(parent["moves"][:cut])
    sp_b = parent["ts"] + parent["stride"] * cut
    child_a = dict(parent, id=parent["id"] + "_a", seq=parent["seq"][:ones_a], qual=parent["qual"][:ones_a])
    child_a["tags"] = with_moves(parent, parent["stride"], parent["moves"][:cut], parent["ts"], sp_b,
                                 [("pi", parent["id"], "Z"), ("sp", 0, "i")])
    child_b = dict(parent, id=parent["id"] + "_b", seq=parent["seq"][ones_a:], qual=parent["qual"][ones_a:])
    child_b["tags"] = with_moves(parent, parent["stride"], parent["moves"][cut:], 0, parent["ns"] - sp_b,
                                 [("pi", parent["id"], "Z"), ("sp", sp_b, "i")])
    sam = tmp_path / "split.sam"
    write_alignments(sam, [r for r in sam_records if r is not parent] + [child_b, child_a])
    pair_inputs(paired / "reads.blow5", sam, tmp_path / "split.jsonl", tokenizer=tiny_kmeans, chunk_size=800)
    whole = tmp_path / "whole.jsonl"
    pair_inputs(paired / "reads.blow5", paired / "moves.sam", whole, tokenizer=tiny_kmeans, chunk_size=0)
    rows = rows_by_read(read_jsonl(tmp_path / "split.jsonl"))
    assert parent["id"] not in rows and {child_a["id"], child_b["id"]} <= set(rows)
    assert "".join(r["bases"] for r in rows[child_a["id"]] + rows[child_b["id"]]) == parent["seq"]
    (full,) = rows_by_read(read_jsonl(whole))[parent["id"]]
    tokens = full["text"].split("<|")[1:]
    spt = tiny_kmeans.samples_per_token
    absolute = []
    for row in rows[child_a["id"]] + rows[child_b["id"]]:
        f0 = row["chunk_start"] // spt
        assert row["text"] == "".join(f"<|{t}" for t in tokens[f0 - full["chunk_start"] // spt:][:row["text"].count("<|")])
        absolute += [row["chunk_start"] // spt + b for b in row["base_starts"]]
    assert absolute == [full["chunk_start"] // spt + b for b in full["base_starts"]]
    assert rows[child_b["id"]][0]["chunk_start"] >= sp_b // spt * spt
    assert rows[child_a["id"]][-1]["chunk_start"] + rows[child_a["id"]][-1]["chunk_size"] == sp_b


def test_unmatched_reads_and_basecalls_are_errors_or_reported(tmp_path, paired, sam_records, tiny_kmeans):
    from nst_hf.errors import InvalidReadError
    from nst_hf.output import read_jsonl
    from nst_hf.pipeline import pair_inputs

    orphan = dict(sam_records[0], id="no-such-signal-read")
    bad = dict(sam_records[5], seq=sam_records[5]["seq"][:-1], qual=sam_records[5]["qual"][:-1])
    kept = [r for r in sam_records if r["id"] not in (sam_records[1]["id"], sam_records[5]["id"])]
    sam = tmp_path / "calls.sam"
    write_alignments(sam, kept + [orphan, bad])
    out = tmp_path / "out" / "pairs.jsonl"
    out.parent.mkdir()
    with pytest.raises(InvalidReadError, match=sam_records[1]["id"] + ".*no basecall"):
        pair_inputs(paired / "reads.blow5", sam, out, tokenizer=tiny_kmeans)
    assert sorted(p.name for p in out.parent.iterdir()) == []  # nothing written on failure

    summary = pair_inputs(paired / "reads.blow5", sam, out, tokenizer=tiny_kmeans, on_error="skip")
    reasons = {s.read_id: s.reason for s in summary.skipped}
    assert set(reasons) == {sam_records[1]["id"], sam_records[5]["id"], "no-such-signal-read"}
    assert "no basecall" in reasons[sam_records[1]["id"]]
    assert "marks" in reasons[sam_records[5]["id"]] and "bases" in reasons[sam_records[5]["id"]]
    assert "without a signal" in reasons["no-such-signal-read"]
    report = json.loads(out.with_name("pairs.jsonl.report.json").read_text())
    assert {s["read_id"] for s in report["skipped"]} == set(reasons)
    assert {r["read_id"] for r in read_jsonl(out)} == {r["id"] for r in kept}


def test_a_basecall_without_signal_stops_the_run_at_the_end_and_resume_skips_it(tmp_path, paired, sam_records,
                                                                                 tiny_kmeans):
    from nst_hf.errors import InvalidReadError
    from nst_hf.pipeline import pair_inputs

    sam = tmp_path / "calls.sam"
    write_alignments(sam, sam_records + [dict(sam_records[0], id="orphan")])
    out = tmp_path / "pairs.jsonl"
    with pytest.raises(InvalidReadError, match="1 basecall.*orphan.*--resume --on-error skip"):
        pair_inputs(paired / "reads.blow5", sam, out, tokenizer=tiny_kmeans, chunk_size=800)
    assert not out.exists() and out.with_name("pairs.jsonl.parts").is_dir()
    with pytest.raises(ValueError, match="different pairs"):
        pair_inputs(paired / "reads.blow5", sam, out, tokenizer=tiny_kmeans, chunk_size=1600, resume=True,
                    on_error="skip")
    summary = pair_inputs(paired / "reads.blow5", sam, out, tokenizer=tiny_kmeans, chunk_size=800, resume=True,
                          on_error="skip")
    assert summary.files_resumed == 1 and summary.reads == 40
    assert [s.read_id for s in summary.skipped] == ["orphan"]


def test_fastq_gives_whole_read_pairs_and_refuses_chunks(tmp_path, paired, sam_records, tiny_kmeans):
    from nst_hf.output import read_jsonl
    from nst_hf.pipeline import pair_inputs

    fastq = tmp_path / "calls.fq"
    fastq.write_text("".join(f"@{r['id']}\n{r['seq']}\n+\n{'5' * len(r['seq'])}\n" for r in sam_records))
    pair_inputs(paired / "reads.blow5", fastq, tmp_path / "whole.jsonl", tokenizer=tiny_kmeans)
    rows = read_jsonl(tmp_path / "whole.jsonl")
    assert sorted((r["read_id"], r["bases"], r["chunk_start"], r["base_starts"]) for r in rows) == \
        sorted((r["id"], r["seq"], 0, None) for r in sam_records)
    summary = pair_inputs(paired / "reads.blow5", fastq, tmp_path / "chunks.jsonl", tokenizer=tiny_kmeans,
                          chunk_size=800, on_error="skip")
    assert summary.reads == 0 and len(summary.skipped) == 40
    assert all("no move table" in s.reason for s in summary.skipped)


def test_cli_pairs_rejects_a_chunk_size_that_cuts_frames(tmp_path, paired, capsys):
    from nst_hf.cli import main

    out = tmp_path / "x.jsonl"
    assert main(["pairs", str(paired / "reads.blow5"), "--basecalls", str(paired / "moves.sam"), "-o", str(out),
                 "--chunk-size", "2002"]) == 1
    assert "chunk size 2002 is not a multiple of the tokenizer's 5 samples per token" in capsys.readouterr().err
    assert not out.exists() and not out.with_name("x.jsonl.parts").exists()


# ---------------------------------------------------------------------------------------------- information


def hand_mutual_information(pairs: list[tuple[int, int]]) -> float:
    """I(X;Y) in bits from Miller–Madow-corrected plug-in entropies, counted with Counters."""
    n = len(pairs)

    def entropy(counter: Counter) -> float:
        plug_in = -sum(c / n * math.log2(c / n) for c in counter.values())
        return plug_in + (len(counter) - 1) / (2 * n * math.log(2))

    return entropy(Counter(x for x, _ in pairs)) + entropy(Counter(y for _, y in pairs)) - entropy(Counter(pairs))


def test_mutual_information_of_known_distributions():
    from nst_hf.evaluate import entropy_bits, mutual_information_bits

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=200_000)
    assert mutual_information_bits(y, y) == pytest.approx(entropy_bits(y)) and entropy_bits(y) == pytest.approx(2, abs=1e-3)
    assert abs(mutual_information_bits(rng.integers(0, 64, size=y.size), y)) < 0.002
    small = [(0, 1), (0, 1), (1, 0), (2, 3), (1, 1)]
    x, z = np.array([a for a, _ in small]), np.array([b for _, b in small])
    assert mutual_information_bits(x, z) == pytest.approx(hand_mutual_information(small), abs=1e-12)


def test_evaluate_base_information_agrees_with_a_hand_count(tmp_path, paired, sam_records, reads, tiny_kmeans):
    from nst_hf.evaluate import evaluate_tokenizer

    sam = tmp_path / "calls.sam"
    sam_records = sam_records[:6]
    write_alignments(sam, sam_records)

    report = evaluate_tokenizer(tiny_kmeans, [paired / "reads.blow5"], basecalls=sam)
    letter = {"A": 0, "C": 1, "G": 2, "T": 3}
    base_pairs, kmer_pairs = [], []
    for rec in sam_records:
        record = reads[rec["id"]]
        (codes,) = tiny_kmeans.encode_preprocessed([tiny_kmeans.preprocess_signal(record.signal_pa, 4000.0)])
        starts = hand_starts(rec)
        end = rec["ts"] + rec["stride"] * len(rec["moves"])
        for t, code in enumerate(codes[:, 0].tolist()):
            centre = t * tiny_kmeans.stride + tiny_kmeans.dimension // 2
            if centre < starts[0] or centre >= end:
                continue
            i = bisect.bisect_right(starts, centre) - 1  # the last base starting at or before the centre
            base_pairs.append((code, letter[rec["seq"][i]]))
            if 0 < i < len(starts) - 1:
                kmer_pairs.append((code, rec["seq"][i - 1:i + 2]))
    assert report["base_information"]["frames"] == len(base_pairs)
    assert report["base_information"]["basecalls"] == 6
    assert len(report["base_information"]["skipped"]) == 34  # the reads this SAM has no basecall for, listed
    assert report["base_information_bits"]["L1"] == pytest.approx(hand_mutual_information(base_pairs), abs=1e-9)
    assert report["kmer3_information_bits"]["L1"] == pytest.approx(hand_mutual_information(kmer_pairs), abs=1e-9)
    assert 0 < report["base_information_bits"]["L1"] < report["base_information"]["base_entropy_bits"]
    baseline = report["base_information"]["shuffled_baseline_bits"]
    assert abs(baseline["base"]["L1"]) < 0.01 < report["base_information_bits"]["L1"]  # tokens beat no information
    assert abs(baseline["kmer3"]["L1"]) < report["kmer3_information_bits"]["L1"]


def test_cli_evaluate_prints_base_information(tmp_path, paired, sam_records, tiny_rvq, capsys):
    from nst_hf.cli import main

    tiny_rvq.save_pretrained(tmp_path / "tok")
    sam = tmp_path / "calls.sam"
    write_alignments(sam, sam_records[:2])
    assert main(["evaluate", str(paired / "reads.blow5"), "--tokenizer", str(tmp_path / "tok"), "--basecalls",
                 str(sam), "--resample", "--token-type", "L3", "--max-reads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["base_information_bits"]) == {"L1", "L2", "L3"}
    assert all(0 < v < 2 for v in report["base_information_bits"].values())
    assert report["base_information"]["basecalls"] == 1 and report["reads"] == 1


@pytest.mark.slow
def test_worker_processes_write_the_same_pairs(tmp_path, paired, reads, tiny_kmeans):
    from nst_hf.io.writers import write_pod5
    from nst_hf.output import read_jsonl
    from nst_hf.pipeline import pair_inputs

    ordered = list(reads.values())
    write_pod5(tmp_path / "in" / "a.pod5", ordered[:20])
    write_pod5(tmp_path / "in" / "b.pod5", ordered[20:])
    one = pair_inputs(tmp_path / "in", paired / "moves.sam", tmp_path / "one.jsonl", tokenizer=tiny_kmeans,
                      chunk_size=800)
    two = pair_inputs(tmp_path / "in", paired / "moves.sam", tmp_path / "two.jsonl", tokenizer=tiny_kmeans,
                      chunk_size=800, workers=2)
    assert one.reads == two.reads == 40 and two.skipped == []
    assert read_jsonl(tmp_path / "two.jsonl") == read_jsonl(tmp_path / "one.jsonl")


def test_reads_to_dataset_joins_basecalls_and_names_the_unjoined(tmp_path, paired, sam_records):
    from nst_hf.errors import InvalidReadError
    from nst_hf.hf_datasets import reads_to_dataset

    sam = tmp_path / "calls.sam"
    write_alignments(sam, sam_records[1:] + [dict(sam_records[0], id="orphan")])
    with pytest.raises(InvalidReadError, match=sam_records[0]["id"] + ".*no basecall"):
        reads_to_dataset(paired / "reads.blow5", basecalls=sam, cache_dir=str(tmp_path / "c1"))
    write_alignments(tmp_path / "all.sam", sam_records + [dict(sam_records[0], id="orphan")])
    with pytest.raises(InvalidReadError, match="1 signal read.*orphan"):
        reads_to_dataset(paired / "reads.blow5", basecalls=tmp_path / "all.sam", cache_dir=str(tmp_path / "c2"))
    ds = reads_to_dataset(paired / "reads.blow5", basecalls=sam, on_error="skip", cache_dir=str(tmp_path / "c3"))
    assert len(ds) == 39 and sam_records[0]["id"] not in set(ds["read_id"])
    row = ds[0]
    rec = next(r for r in sam_records if r["id"] == row["read_id"])
    assert row["bases"] == rec["seq"] and row["base_samples"] == hand_starts(rec)
    assert row["signal_read_id"] == row["read_id"] and row["region_start"] == 0


@pytest.mark.parametrize("num_proc", [None, 2])
def test_reads_to_dataset_keeps_the_asked_read_ids_whatever_the_processes(tmp_path, paired, reads, num_proc):
    from nst_hf.hf_datasets import reads_to_dataset

    wanted = sorted(reads)[:3]
    ds = reads_to_dataset(paired / "reads.blow5", read_ids=wanted, num_proc=num_proc, cache_dir=str(tmp_path))
    assert sorted(ds["read_id"]) == wanted
