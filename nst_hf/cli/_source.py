"""The options that say which tokenizer a command loads, shared by ``tokenize``, ``evaluate``, ``inspect``
and ``convert``."""

from __future__ import annotations


def add_source_options(parser, sampling_rate: bool = True) -> None:
    """``--revision``, ``--filename``, ``--stride``, ``--trust-pickle`` (and ``--sampling-rate``)."""
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of the tokenizer repo")
    parser.add_argument("--filename", default=None,
                        help="which upstream checkpoint or centroids file of a repo or folder to convert, "
                             "when it holds several")
    parser.add_argument("--stride", type=int, default=None, help="K-Means stride for upstream centroids without one")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a pickled upstream centroids dict (unpickling can run code: trusted files only)")
    if sampling_rate:
        parser.add_argument("--sampling-rate", type=float, default=None,
                            help="record the rate (Hz) an upstream checkpoint was trained at; reads at other rates "
                                 "are then refused or resampled")


def source_kwargs(args) -> dict:
    """The given source options as ``load_tokenizer`` keyword arguments."""
    names = ("revision", "filename", "stride", "trust_pickle", "sampling_rate")
    return {name: getattr(args, name) for name in names if getattr(args, name, None)}
