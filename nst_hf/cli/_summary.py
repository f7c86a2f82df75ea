"""What the run commands print about the reads (or basecalls) they left out."""

from __future__ import annotations

from nst_hf.output import printable_path


def print_skipped(summary, output: str, what: str = "reads", shown: int = 10) -> None:
    """``N <what> skipped (details in OUTPUT.report.json):`` and the first ``shown`` with their reasons."""
    if not summary.skipped:
        return
    print(f"{len(summary.skipped)} {what} skipped (details in {printable_path(f'{output}.report.json')}):")
    for skipped in summary.skipped[:shown]:
        print(f"  {skipped.read_id or printable_path(skipped.file)}: {printable_path(skipped.reason)}")
