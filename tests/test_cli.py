"""The nst-hf command line: help for every command, one-line errors, inspect and bench output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nst_hf
from nst_hf.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "data" / "sample.pod5"


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "nst_hf", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _subcommands(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield [name]
                for rest in _subcommands(sub):
                    yield [name, *rest]


def test_help_for_every_command(capsys):
    from nst_hf.cli import build_parser

    commands = list(_subcommands(build_parser()))
    assert ["inspect"] in commands and ["bench", "read"] in commands
    for command in [[], *commands]:
        with pytest.raises(SystemExit) as info:
            main([*command, "-h"])
        assert info.value.code == 0
        assert "usage: nst-hf" in capsys.readouterr().out


@pytest.mark.slow
def test_error_is_one_line_and_nonzero(tmp_path):
    result = _cli("inspect", str(tmp_path / "missing.pod5"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.pod5: no such file" in lines[0] and "NST_HF_DEBUG" in lines[0]
    debug = _cli("inspect", str(tmp_path / "missing.pod5"), env={"NST_HF_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_inspect_sample(capsys):
    assert main(["inspect", "--json", str(SAMPLE)]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["reads"] == 8 and summary["sampling_rates"] == [5000.0] and summary["skipped"] == []


@pytest.mark.slow
def test_bench_read_prints_rows_for_each_input(capsys):
    assert main(["bench", "read", "--seconds", "0.01", "--json", str(SAMPLE), str(SAMPLE.with_suffix(".fast5"))]) == 0
    report = json.loads(capsys.readouterr().out)
    inputs = [row["input"] for row in report["read"]]
    assert inputs[:2] == ["sample.pod5", "sample.fast5"] and inputs[-1] == "all inputs (2 files)"
    assert all(row["samples"] == 148_875 * (2 if row["format"] == "mixed" else 1) for row in report["read"])
    assert all(row["samples_per_s"] > 0 and row["rss_peak_mib"] > 0 for row in report["read"])
    assert set(report["preprocess"]["steps"]) == {"normalize (med/MAD)", "median filter k=5",
                                                   "low-pass 1 kHz order 6", "K-Means chain"}


@pytest.mark.slow
def test_bench_pipeline_compares_with_the_same_reads_in_memory_and_says_where_time_goes(capsys):
    from nst_hf.bench import PIPELINE_STAGES, bench_pipeline, format_pipeline_report, summarize_pipeline_runs
    from nst_hf.io import open_reads

    sample = ROOT / "examples" / "data" / "sample.pod5"
    report = bench_pipeline("default", [sample])
    with open_reads(sample) as source:
        samples = sum(record.num_samples for record in source)
    assert [(row["input"], row["prefetch"], row["start"]) for row in report["rows"]] == \
        [("full (1 files)", True, "run"), ("full (1 files)", False, "run"), ("full (1 files)", False, "loaded")]
    for row in report["rows"]:
        assert row["samples"] == samples and row["reads"] == 8 and row["skipped"] == 0
        assert row["ratio_to_tokenizer_alone"] == pytest.approx(row["samples_per_s"] / row["alone_samples_per_s"])
        stages = row["stage_seconds"]
        assert set(stages) == set(PIPELINE_STAGES)  # every stage was timed, reading and writing included
        assert 0 < sum(stages.values()) < row["seconds"]
        assert (row["load_seconds"] > 0) == (row["start"] == "run")  # a run that loads counts the load apart
        # as `nst-hf tokenize` does, a run begins the readers' start-up (here pod5's import) before torch's
        assert row["readers_before_imports"] == (row["start"] == "run")
        assert set(row["alone_stage_seconds"]) >= {"preprocess", "encoder", "search"}
        assert 0 < sum(row["alone_stage_seconds"].values()) < row["alone_seconds"]
    assert [(s["prefetch"], s["start"], s["runs"]) for s in summarize_pipeline_runs(report)] == \
        [(True, "run", 1), (False, "run", 1), (False, "loaded", 1)]  # one file: small and full are one input
    text = format_pipeline_report(report)
    assert "encoder" in text and "other" in text and "reads skipped" in text


def test_pipeline_runs_are_summarized_per_input_and_reading_ahead_as_median_and_range():
    from nst_hf.bench import format_pipeline_report, summarize_pipeline_runs

    def row(run, label, prefetch, ratio):
        return {"run": run, "input": label, "prefetch": prefetch, "samples": 1000, "samples_per_s": 1000.0 * ratio,
                "alone_samples_per_s": 1000.0, "alone_seconds": 1.0, "seconds": 1 / ratio, "rss_peak_mib": 1.0,
                "ratio_to_tokenizer_alone": ratio, "stage_seconds": {}, "alone_stage_seconds": {}}

    ratios = {("small", True): [0.5, 0.7, 0.6], ("small", False): [0.4, 0.3, 0.9], ("full", True): [0.8, 0.9, 1.0]}
    rows = [row(run, label, prefetch, values[run]) for run in range(3) for (label, prefetch), values in ratios.items()]
    report = {"tokenizer": "t", "runs": 3, "rows": rows}
    assert {(s["input"], s["prefetch"]): s["ratio"] for s in summarize_pipeline_runs(report)} == {
        ("small", True): (0.6, 0.5, 0.7), ("small", False): (0.4, 0.3, 0.9), ("full", True): (0.9, 0.8, 1.0)}
    assert "small              no    run    0.40 [0.30–0.90] of the tokenizer alone" in format_pipeline_report(report)


@pytest.mark.slow
@pytest.mark.parametrize("forced", [None, "avx2"])
def test_bench_tokenize_reports_limit_fraction(capsys, checkpoints, monkeypatch, forced):
    """Also where the CPU itself picks the AVX2 path (an AVX2-only CPU, as forced here without ``--kernel``): its
    row is held against the AVX2 limit, which the bench then measures too."""
    from nst_hf.quantizers import fused

    if forced is not None:
        if forced not in fused.supported_kernels():
            pytest.skip(f"this CPU/build has no {forced} path")
        if fused.kernel_name() == forced:
            pytest.skip(f"this CPU picks the {forced} path by itself: the unforced case runs it")
        monkeypatch.setenv("NST_HF_FUSED_KERNEL", forced)
    args = ["bench", "tokenize", "--json", "--seconds", "0.01", "--max-samples", "20000", "--device", "cpu",
            "--tokenizer", str(checkpoints / "vq_cnn1_cb8192.pth"), str(SAMPLE)]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["rows"]
    assert report["peak_gflops"]["cpu"] > 1 and row["kind"] == "vq" and row["samples"] >= 20000
    # cnn_type 1: convs 2*(1*16*5 + 16*32*5 + 32*64*25/5) FLOPs, search 2*8192*64/5 per sample
    assert row["flops_per_sample"] == {"encoder": 25760.0, "search": 2 * 8192 * 64 / 5}
    peak = report["peak_gflops"][row["limit"]]  # the limit of the path that ran
    assert row["limit"] == ("cpu-avx2" if row["kernel"] == "avx2" else "cpu") and peak > 1
    if forced is not None:
        assert row["kernel"] == forced
    assert row["fraction_of_limit"] == pytest.approx(row["samples_per_s"] / (peak * 1e9 /
                                                     sum(row["flops_per_sample"].values())))
    stages = row["stage_samples_per_s"]  # encoder and search each alone: faster than the whole call
    assert set(stages) == {"encoder", "search", "other"} and all(stages[s] > row["samples_per_s"] for s in stages)
    # from the same passes as the call's rate: the stages' seconds add up to the call's
    assert sum(1 / rate for rate in stages.values()) == pytest.approx(1 / row["samples_per_s"], rel=1e-9)
    for stage in ("encoder", "search"):
        assert row["stage_fraction_of_limit"][stage] == pytest.approx(
            stages[stage] * row["flops_per_sample"][stage] / (peak * 1e9))


def test_bench_resamples_before_the_timing(upstream_dir):
    """``--resample`` hands the timed calls signals already at the tokenizer's rate (demo.fast5: 4 → 5 kHz)."""
    from nst_hf.bench import _bench_signals

    tok = nst_hf.load_tokenizer("default")
    raw, raw_rates = _bench_signals(tok, [str(upstream_dir / "demo.fast5")], 600_000, resample=False)
    signals, rates = _bench_signals(tok, [str(upstream_dir / "demo.fast5")], 600_000, resample=True)
    assert set(raw_rates) == {4000.0} and set(rates) == {5000.0} and len(signals) == len(raw) > 1
    assert [s.size for s in signals] == [-(-r.size * 5 // 4) for r in raw]


def test_inspect_tokenizer(capsys, checkpoints):
    assert main(["inspect", "default"]) == 0
    out = capsys.readouterr().out
    assert "NstVQTokenizer (vq)" in out and "1024 codes x 1 level(s)" in out and "1000 tokens/s per level" in out
    assert main(["inspect", "--json", str(checkpoints / "rvq_nq4_cb1024.pth")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["class"] == "NstRVQTokenizer" and info["num_quantizers"] == 4 and info["samples_per_token"] == 12
    assert info["vocab_size_with_special_tokens"] == 4100 and info["preprocessing"]["normalization"] == "med_mad"


def test_evaluate_plots_with_resample_after_printing_the_report(upstream_dir, tmp_path, capsys):
    """demo.fast5 is 4 kHz and the default tokenizer 5 kHz: the plot must resample like the evaluation, and come
    after the report so that a failing plot cannot lose it."""
    from nst_hf.cli import main

    png = tmp_path / "read.png"
    assert main(["evaluate", str(upstream_dir / "demo.fast5"), "--resample", "--max-reads", "1", "--json",
                 "--plot", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reads"] == 1 and png.stat().st_size > 10_000
