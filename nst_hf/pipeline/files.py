"""File jobs on one tokenizer: the reads of a source → ``{"id", "text"}`` rows, and one signal file (or
folder) → one JSON-lines file."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nst_hf.io import SkippedRead, find_signal_files, open_reads
from nst_hf.output import AtomicJsonlWriter
from nst_hf.tokenizers.base import DEFAULT_BATCH_SAMPLES
from nst_hf.tokenizers.vocab import codes_to_ids, codes_to_text

logger = logging.getLogger(__name__)


@dataclass
class TokenizeSummary:
    """What :func:`tokenize_file` or :func:`write_tokens` did."""

    reads: int = 0
    tokens: int = 0
    samples: int = 0
    seconds: float = 0.0
    skipped: list[SkippedRead] = field(default_factory=list)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {"reads": self.reads, "tokens": self.tokens, "samples": self.samples, "seconds": self.seconds,
                "samples_per_second": self.samples_per_second, "skipped": [s.to_dict() for s in self.skipped]}


@contextlib.contextmanager
def _untimed(name: str):
    yield


def write_tokens(tokenizer, source, out, token_type: str | None = None, on_error: str = "raise",
                 resample: bool = False, batch_samples: int = DEFAULT_BATCH_SAMPLES, return_ids: bool = False,
                 on_read=None) -> TokenizeSummary:
    """Tokenize the reads of an :func:`~nst_hf.io.open_reads` source into ``out.write(row)`` rows.

    Rows are ``{"id", "text"}`` (plus ``input_ids`` with ``return_ids``); skipped reads, the source's own
    and those that cannot be tokenized, are listed in the returned summary. ``on_read(num_samples)`` is
    called after every read (progress bars).
    """
    summary = TokenizeSummary()
    started = time.perf_counter()
    for record, codes, error in tokenizer.iter_tokenized(source, token_type, on_error, resample, batch_samples):
        write_outcome(tokenizer, record, codes, error, out, summary, return_ids)
        if on_read is not None:
            on_read(record.num_samples)
    summary.skipped[:0] = getattr(source, "skipped", [])
    summary.seconds = time.perf_counter() - started
    return summary


def write_outcome(tokenizer, record, codes, error: str | None, out, summary: TokenizeSummary,
                  return_ids: bool = False) -> None:
    """One :meth:`~nst_hf.tokenizers.base.NstBaseTokenizer.iter_tokenized` outcome: a row for ``out.write``
    counted in ``summary``, or (no codes) a skipped read with its reason."""
    if codes is None or codes.size == 0:
        reason = error or tokenizer.no_tokens_reason(record.num_samples)
        summary.skipped.append(SkippedRead(record.source_file, record.read_id, reason))
        return
    with (getattr(tokenizer, "_stage", None) or _untimed)("write"):
        row = {"id": record.read_id, "text": codes_to_text(codes, tokenizer.is_rvq)}
        if return_ids:
            row["input_ids"] = codes_to_ids(codes, tokenizer.codebook_size, tokenizer.is_rvq).tolist()
        out.write(row)
    summary.reads += 1
    summary.tokens += int(codes.size)
    summary.samples += record.num_samples


def tokenize_file(tokenizer, path, output_path, token_type: str | None = None, on_error: str = "raise",
                  read_ids: Iterable[str] | None = None, resample: bool = False,
                  batch_samples: int = DEFAULT_BATCH_SAMPLES, progress: bool = False) -> TokenizeSummary:
    """Tokenize every read of a signal file (or folder) into JSON lines ``{"id", "text"}``.

    The output is gzip-compressed when its name ends in ``.gz`` and written atomically. Bad reads raise
    (``on_error="raise"``) or are skipped and listed in the returned summary (``"skip"``). For many files,
    resumable runs and worker processes use :func:`nst_hf.pipeline.tokenize_inputs`.
    """
    from tqdm.auto import tqdm

    total = sum(os.path.getsize(f) for f in find_signal_files(path))
    with open_reads(path, read_ids=read_ids, on_error=on_error) as source, AtomicJsonlWriter(output_path) as out:
        bar = tqdm(desc=f"tokenizing {Path(str(path)).name}", total=total, unit="B", unit_scale=True,
                   unit_divisor=1024, disable=not progress)

        def on_read(samples: int) -> None:  # raw size (2 bytes a sample), never past the total
            bar.update(min(2 * samples, total - bar.n))

        summary = write_tokens(tokenizer, source, out, token_type, on_error, resample, batch_samples, on_read=on_read)
        bar.update(total - bar.n)
        bar.close()
    return summary
