"""Writers for FAST5 (multi-read) and POD5, used for sample data, test fixtures and conversions.

Files are written to a temporary name and renamed when complete, so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import datetime
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nst_hf.io.fast5 import VBZ_FILTER_ID, _h5py
from nst_hf.io.records import SignalRecord
from nst_hf.output import atomic_path

FAST5_COMPRESSIONS = ("vbz", "gzip", None)


def write_fast5(path: str | os.PathLike, records: Iterable[SignalRecord], compression: str | None = "vbz") -> Path:
    """Write records as a multi-read FAST5 (``/read_<id>/Raw/Signal`` + ``channel_id`` attributes).

    ``compression`` is ``"vbz"`` (HDF5 filter 32020, as MinKNOW writes), ``"gzip"`` or ``None``.
    """
    if compression not in FAST5_COMPRESSIONS:
        raise ValueError(f"compression must be one of {FAST5_COMPRESSIONS}, got {compression!r}")
    h5py = _h5py()
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["file_version"] = b"2.2"
            handle.attrs["file_type"] = b"multi-read"
            for record in records:
                group = handle.create_group(f"read_{record.read_id}")
                raw = group.create_group("Raw")
                kwargs: dict = {}
                if compression == "vbz":
                    kwargs = {"compression": VBZ_FILTER_ID, "compression_opts": (0, 2, 1, 1), "chunks": True}
                elif compression == "gzip":
                    kwargs = {"compression": "gzip", "chunks": True}
                raw.create_dataset("Signal", data=np.asarray(record.signal, dtype=np.int16), **kwargs)
                raw.attrs["read_id"] = record.read_id.encode()
                raw.attrs["duration"] = np.uint32(record.num_samples)
                raw.attrs["start_time"] = np.uint64(record.start_sample or 0)
                channel = group.create_group("channel_id")
                for key in ("offset", "range", "digitisation", "sampling_rate"):
                    value = getattr(record, key)
                    if value is not None:
                        channel.attrs[key] = np.float64(value)
                channel.attrs["channel_number"] = (record.channel or "1").encode()
                tracking = group.create_group("tracking_id")
                tracking.attrs["run_id"] = (record.run_id or "").encode()
    return path


def write_pod5(path: str | os.PathLike, records: Iterable[SignalRecord]) -> Path:
    """Write records as POD5 (``offset`` and ``scale = range / digitisation`` calibration).

    Read ids must be UUIDs, as POD5 requires; digitisation must be a power of two
    (the ADC range is ``-digitisation/2 … digitisation/2 - 1``).
    """
    import pod5

    path = Path(path)
    epoch = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    run_infos: dict = {}
    with atomic_path(path) as tmp:
        with pod5.Writer(tmp, software_name="nst_hf") as writer:
            for number, record in enumerate(records):
                digitisation = int(record.digitisation)
                key = (record.run_id, digitisation, int(record.sampling_rate))
                if key not in run_infos:
                    run_infos[key] = pod5.RunInfo(
                        acquisition_id=record.run_id or "nst_hf", acquisition_start_time=epoch,
                        adc_max=digitisation // 2 - 1, adc_min=-(digitisation // 2), context_tags={},
                        experiment_name="", flow_cell_id="", flow_cell_product_code="", protocol_name="",
                        protocol_run_id="", protocol_start_time=epoch, sample_id="",
                        sample_rate=int(record.sampling_rate), sequencing_kit="", sequencer_position="",
                        sequencer_position_type="", software="nst_hf", system_name="", system_type="",
                        tracking_id={},
                    )
                writer.add_read(pod5.Read(
                    read_id=uuid.UUID(record.read_id),
                    pore=pod5.Pore(channel=int(record.channel or 1), well=1, pore_type="not_set"),
                    calibration=pod5.Calibration(offset=float(record.offset), scale=record.scale),
                    read_number=number, start_sample=int(record.start_sample or 0), median_before=float("nan"),
                    end_reason=pod5.EndReason(reason=pod5.EndReasonEnum.SIGNAL_POSITIVE, forced=False),
                    run_info=run_infos[key], signal=np.asarray(record.signal, dtype=np.int16),
                ))
    return path
