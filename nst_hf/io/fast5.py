"""FAST5 (HDF5) reader: multi-read and single-read layouts, gzip / VBZ / uncompressed signals.

The layout is decided by structure (``/read_*`` groups or ``/Raw/Reads``), never by the
``file_type`` attribute, which some writers leave empty.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nst_hf.errors import CorruptFileError, InvalidReadError, MissingDependencyError
from nst_hf.io._attrs import as_float, as_int, as_str
from nst_hf.io.records import SignalRecord

logger = logging.getLogger(__name__)

VBZ_FILTER_ID = 32020
_vbz_loaded: bool | None = None


def _load_vbz_plugin() -> bool:
    """Register the VBZ HDF5 filter (``vbz-h5py-plugin``) once; return whether it is available."""
    global _vbz_loaded
    if _vbz_loaded is None:
        try:
            import vbz_h5py_plugin  # noqa: F401  (registers the plugin path with h5py on import)

            _vbz_loaded = True
        except ImportError:
            _vbz_loaded = False
    return _vbz_loaded


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a core dependency
        raise MissingDependencyError("reading FAST5 needs the `h5py` package: pip install h5py") from exc
    _load_vbz_plugin()
    return h5py


def _uses_vbz(dataset) -> bool:
    plist = dataset.id.get_create_plist()
    return any(plist.get_filter(i)[0] == VBZ_FILTER_ID for i in range(plist.get_nfilters()))


def _read_signal(dataset, path: str, read_id: str) -> np.ndarray:
    try:
        data = dataset[()]
    except OSError as exc:
        if _uses_vbz(dataset) and not _load_vbz_plugin():
            raise MissingDependencyError(
                f"{path}: read {read_id} is VBZ-compressed (HDF5 filter {VBZ_FILTER_ID}); "
                "install the `vbz-h5py-plugin` package to read it"
            ) from exc
        raise InvalidReadError(
            f"{path}: cannot decode the signal of read {read_id}: {exc}", path=path, read_id=read_id
        ) from exc
    return np.asarray(data, dtype=np.int16)


def _end_reason(group) -> str | None:
    if "end_reason" not in group.attrs:
        return None
    h5py = _h5py()
    value = group.attrs["end_reason"]
    mapping = h5py.check_enum_dtype(group.attrs.get_id("end_reason").dtype)
    if mapping:
        names = {int(v): k for k, v in mapping.items()}
        return names.get(int(value), str(int(value)))
    return as_str(value)


def _channel_info(group) -> dict:
    if group is None:
        return {}
    attrs = group.attrs
    return {
        "offset": as_float(attrs.get("offset")),
        "range": as_float(attrs.get("range")),
        "digitisation": as_float(attrs.get("digitisation")),
        "sampling_rate": as_float(attrs.get("sampling_rate")),
        "channel": as_str(attrs.get("channel_number")),
    }


def _record(path, read_id, signal_ds, raw_attrs_group, channel_group, tracking_group) -> SignalRecord:
    info = _channel_info(channel_group)
    run_id = as_str(tracking_group.attrs.get("run_id")) if tracking_group is not None else None
    return SignalRecord(
        read_id=read_id,
        signal=_read_signal(signal_ds, path, read_id),
        sampling_rate=info.get("sampling_rate"),
        offset=info.get("offset"),
        range=info.get("range"),
        digitisation=info.get("digitisation"),
        source_file=path,
        channel=info.get("channel"),
        start_sample=as_int(raw_attrs_group.attrs.get("start_time")),
        end_reason=_end_reason(raw_attrs_group),
        run_id=run_id,
    )


def _list(group) -> tuple[list[str], Exception | None]:
    """The names in an HDF5 group, up to the first damaged entry, and that entry's error."""
    names: list[str] = []
    try:
        for name in group:
            names.append(name)
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        return names, exc
    return names, None


def _iter_multi(handle, names: list[str], path: str, wanted: set[str] | None) -> Iterator[SignalRecord | InvalidReadError]:
    for name in names:
        if not name.startswith("read_"):
            continue
        read_id = name[len("read_"):]
        if wanted is not None and read_id not in wanted:
            continue
        try:
            group = handle[name]
            if "Raw" not in group or "Signal" not in group["Raw"]:
                raise InvalidReadError(f"{path}: read {read_id} has no raw signal (no Raw/Signal dataset)",
                                       path=path, read_id=read_id)
            raw = group["Raw"]
            yield _record(path, read_id, raw["Signal"], raw, group.get("channel_id"), group.get("tracking_id"))
        except InvalidReadError as exc:
            yield exc
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            yield InvalidReadError(f"{path}: read {read_id} is unreadable: {exc}", path=path, read_id=read_id)


def _iter_single(handle, path: str, wanted: set[str] | None) -> Iterator[SignalRecord | InvalidReadError]:
    try:
        reads = handle["Raw/Reads"]
        key = handle.get("UniqueGlobalKey")
        channel = key.get("channel_id") if key is not None else None
        tracking = key.get("tracking_id") if key is not None else None
        names = list(reads)
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        raise CorruptFileError(f"{path}: the single-read FAST5 layout is damaged ({type(exc).__name__}: {exc})") from exc
    for name in names:
        try:
            group = reads[name]
            read_id = as_str(group.attrs.get("read_id")) or name
        except (RuntimeError, OSError, KeyError, ValueError) as exc:
            yield InvalidReadError(f"{path}: read group {name} is unreadable: {exc}", path=path, read_id=name)
            continue
        if wanted is not None and read_id not in wanted:
            continue
        try:
            if "Signal" not in group:
                raise InvalidReadError(f"{path}: read {read_id} has no raw signal", path=path, read_id=read_id)
            yield _record(path, read_id, group["Signal"], group, channel, tracking)
        except InvalidReadError as exc:
            yield exc
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            yield InvalidReadError(f"{path}: read {read_id} is unreadable: {exc}", path=path, read_id=read_id)


def iter_fast5(path: str | Path, read_ids: set[str] | None = None) -> Iterator[SignalRecord | InvalidReadError]:
    """Yield each read of a FAST5 file as a record, or as an :class:`InvalidReadError` for a bad read.

    Raises :class:`CorruptFileError` when the file cannot be opened or holds no raw reads.
    Only one read's signal is held in memory at a time.
    """
    h5py = _h5py()
    path = str(path)
    try:
        handle = h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        raise CorruptFileError(f"{path}: not a readable FAST5/HDF5 file ({exc})") from exc
    with handle:
        names, listing_error = _list(handle)
        if any(name.startswith("read_") for name in names):
            yield from _iter_multi(handle, names, path, read_ids)
            if listing_error is not None:  # the reads listed before the damage are delivered above
                raise CorruptFileError(f"{path}: the FAST5 read listing is damaged after {len(names)} entries "
                                       f"({type(listing_error).__name__}: {listing_error})") from listing_error
        elif listing_error is not None:
            raise CorruptFileError(f"{path}: the FAST5 file's group listing is damaged "
                                   f"({type(listing_error).__name__}: {listing_error})") from listing_error
        elif "Raw" in names and "Reads" in handle["Raw"]:
            yield from _iter_single(handle, path, read_ids)
        else:
            raise CorruptFileError(
                f"{path}: FAST5 file holds no raw reads (neither /read_* groups nor /Raw/Reads); "
                "event-only or basecalled-only FAST5 files carry no signal to tokenize"
            )
