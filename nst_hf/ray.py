"""Scale-out on Ray Data: the same batch function as ``datasets.map``, one tokenizer per actor.

Needs the ``ray`` extra (``pip install "nst-hf[ray]"``). Typical use on a cluster::

    import ray, nst_hf.ray as nr
    ray.init(address="auto")
    reads = nr.read_signal_files(ray.data, paths)          # or ray.data.read_parquet(...) of read columns
    tokens = nr.tokenize_dataset(reads, tokenizer="org/bwav-vq", num_actors=16, num_gpus_per_actor=1)
    tokens.write_parquet("s3://bucket/tokens/")
"""

from __future__ import annotations

from collections.abc import Iterable


import nst_hf.tokenizers  # noqa: F401  (torch and the classes at module level: importing torch lazily inside Ray workers is unreliable)
from nst_hf.hf_datasets import tokenize_batch


class TokenizeReads:
    """Ray ``map_batches`` callable: loads the tokenizer once per actor, then tokenizes batches of reads.

    Returns ``id``, ``text`` (and ``error`` / ``input_ids`` when asked) — Ray keeps only returned columns.
    """

    def __init__(self, tokenizer="default", token_type: str | None = None, device: str | None = None,
                 on_error: str = "raise", return_ids: bool = False, load_kwargs: dict | None = None,
                 resample: bool = False):
        from nst_hf.auto import load_tokenizer

        self.tokenizer = tokenizer if not isinstance(tokenizer, str) else load_tokenizer(tokenizer, **(load_kwargs or {}))
        if device and hasattr(self.tokenizer, "to"):
            self.tokenizer.to(device)
        self.kwargs = {"token_type": token_type, "on_error": on_error, "return_ids": return_ids, "resample": resample}

    def __call__(self, batch: dict) -> dict:
        return tokenize_batch(batch, self.tokenizer, **self.kwargs)


def _read_file_rows(row: dict) -> list[dict]:
    from nst_hf.io import open_reads

    out = []
    with open_reads(row["path"], on_error=row.get("on_error", "raise")) as source:
        for record in source:
            out.append({"read_id": record.read_id, "signal": record.signal, "offset": record.offset,
                        "range": record.range, "digitisation": record.digitisation,
                        "sampling_rate": record.sampling_rate, "source_file": record.source_file})
    return out


def read_signal_files(ray_data, paths: Iterable, on_error: str = "raise"):
    """A Ray dataset of read columns (as :func:`nst_hf.hf_datasets.reads_to_dataset`), one task per file.

    ``ray_data`` is the ``ray.data`` module (passed in so importing this module never starts Ray).
    """
    from nst_hf.io import find_signal_files

    files = [{"path": str(p), "on_error": on_error} for p in find_signal_files(paths)]
    return ray_data.from_items(files).flat_map(_read_file_rows)


def tokenize_dataset(dataset, tokenizer="default", token_type: str | None = None, num_actors: int = 2,
                     num_cpus_per_actor: float = 1, num_gpus_per_actor: float = 0, batch_size: int = 16,
                     on_error: str = "raise", return_ids: bool = False, load_kwargs: dict | None = None,
                     resample: bool = False):
    """``dataset.map_batches`` with an actor pool of :class:`TokenizeReads` (CPU or GPU actors)."""
    import ray

    device = "cuda" if num_gpus_per_actor else None
    return dataset.map_batches(
        TokenizeReads, fn_constructor_kwargs={"tokenizer": tokenizer, "token_type": token_type, "device": device,
                                              "on_error": on_error, "return_ids": return_ids,
                                              "load_kwargs": load_kwargs, "resample": resample},
        batch_format="numpy", batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus_per_actor, num_gpus=num_gpus_per_actor,
    )


__all__ = ["TokenizeReads", "read_signal_files", "tokenize_dataset"]
