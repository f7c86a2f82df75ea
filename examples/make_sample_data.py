"""Regenerate the shipped sample files examples/data/sample.{pod5,fast5} (same reads in both).

    python examples/make_sample_data.py
"""

from pathlib import Path

from nst_hf.io.writers import write_fast5, write_pod5
from nst_hf.simulate import simulate_reads

SAMPLE_ARGS = dict(num_reads=8, min_samples=8000, max_samples=30000, sampling_rate=5000.0, seed=2026)


def main(out_dir: Path = Path(__file__).parent / "data") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    records = simulate_reads(**SAMPLE_ARGS)
    write_pod5(out_dir / "sample.pod5", records)
    write_fast5(out_dir / "sample.fast5", records, compression="vbz")
    print(f"wrote {len(records)} reads, {sum(r.num_samples for r in records)} samples to {out_dir}")


if __name__ == "__main__":
    main()
