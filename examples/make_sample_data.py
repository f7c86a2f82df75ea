"""Regenerate the shipped sample files: examples/data/sample.{pod5,fast5} (simulated; same reads in both) and
examples/data/sample_pairs.{pod5,sam} (3 real R9.4.1 reads with their Guppy basecalls and move tables, taken
from ../shared/data/paired/squigualiser_r9, MIT, © 2022 Hiruna Samarakoon: see LICENSE-sample_pairs.txt).

    python examples/make_sample_data.py
"""

from pathlib import Path

from nst_hf.io.writers import write_fast5, write_pod5
from nst_hf.simulate import simulate_reads

SAMPLE_ARGS = dict(num_reads=8, min_samples=8000, max_samples=30000, sampling_rate=5000.0, seed=2026)
PAIRED = Path(__file__).resolve().parents[2] / "shared" / "data" / "paired" / "squigualiser_r9"
PAIRED_READS = 3  # the shortest reads: a small file that still has thousands of bases


def make_sample_pairs(out_dir: Path) -> None:
    """The ``PAIRED_READS`` shortest shared paired reads as POD5, and their SAM records unchanged."""
    import pysam

    from nst_hf.io import open_reads

    with open_reads(PAIRED / "reads.blow5") as source:
        records = sorted(source, key=lambda record: record.num_samples)[:PAIRED_READS]
    keep = {record.read_id for record in records}
    write_pod5(out_dir / "sample_pairs.pod5", records)
    with pysam.AlignmentFile(str(PAIRED / "moves.sam"), "r", check_sq=False) as calls, \
            pysam.AlignmentFile(str(out_dir / "sample_pairs.sam"), "w", template=calls) as out:
        for call in calls.fetch(until_eof=True):
            if call.query_name in keep:
                out.write(call)


def main(out_dir: Path = Path(__file__).parent / "data") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    records = simulate_reads(**SAMPLE_ARGS)
    write_pod5(out_dir / "sample.pod5", records)
    write_fast5(out_dir / "sample.fast5", records, compression="vbz")
    print(f"wrote {len(records)} reads, {sum(r.num_samples for r in records)} samples to {out_dir}")
    make_sample_pairs(out_dir)


if __name__ == "__main__":
    main()
