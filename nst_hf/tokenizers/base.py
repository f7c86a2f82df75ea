"""The base class every nst_hf tokenizer shares: a ``transformers.PreTrainedTokenizer`` whose text side
is the bwav vocabulary and whose signal side is preprocess → encode codes → format tokens.

Subclasses implement only ``_encode_preprocessed`` (codes for a batch of preprocessed signals),
``flops_per_sample`` and the loading/saving of their own weights; preprocessing, sampling-rate checks,
token formatting, batching over many reads and the text vocabulary exist here once. File jobs live in
:mod:`nst_hf.pipeline`, the earlier tool's method names in :mod:`nst_hf.tokenizers.compat`.

The public ways from signal to tokens:

- ``tokenizer(signals=...)``: ``input_ids`` + ``attention_mask`` (the Hugging Face call);
- :meth:`NstBaseTokenizer.encode_signals_to_codes`: codes ``[T, levels]`` for many pA signals;
- :meth:`NstBaseTokenizer.signal_to_text`: the bwav text of one pA signal;
- :meth:`NstBaseTokenizer.iter_tokenized`: codes per read of a stream of :class:`~nst_hf.io.SignalRecord`;
- :meth:`NstBaseTokenizer.preprocess_signal` then :meth:`NstBaseTokenizer.encode_preprocessed`: the two
  halves, for callers that need the signal the encoder saw (evaluation, benchmarks).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import fields
from pathlib import Path

import numpy as np
from transformers import BatchEncoding, PreTrainedTokenizer

from nst_hf._threads import ahead, compute_threads, thread_pool
from nst_hf.errors import CheckpointError, ConstantSignalError, InvalidReadError, InvalidSignalError, NstHfError
from nst_hf.io import SignalRecord
from nst_hf.preprocessing import PreprocessingConfig, preprocess, resample_signal
from nst_hf.tokenizers.compat import EarlierToolMethods
from nst_hf.tokenizers.vocab import SPECIAL_TOKENS, TOKEN_RE, codes_to_ids, codes_to_text

logger = logging.getLogger(__name__)
_STAGE_LOCK = threading.Lock()

PREPROCESSOR_FILE = "bwav_preprocessor_config.json"
TRAINING_FILE = "bwav_training.json"
#: transformers' "no limit" (``VERY_LARGE_INTEGER``): above 1e20 it skips ``padding="max_length"`` without a
#: ``max_length`` instead of allocating that many positions.
DEFAULT_MAX_LENGTH = int(1e30)
#: What nst_hf 0.1 saved as "no limit"; read as :data:`DEFAULT_MAX_LENGTH`.
_OLD_NO_LIMIT = 2**31 - 1
#: Sampling rates (Hz) a nanopore read can plausibly have; others are damaged metadata, refused per read.
PLAUSIBLE_SAMPLING_RATES = (500.0, 100_000.0)
#: The most a resampling may lengthen a read (a damaged rate must not turn a read into millions of tokens).
MAX_RESAMPLE_GROWTH = 10.0
#: Samples gathered from many reads before one batched encoding pass.
DEFAULT_BATCH_SAMPLES = 1_000_000


#: What ``save_pretrained(..., push_to_hub=True)`` forwards to :meth:`NstBaseTokenizer.push_to_hub`.
_PUSH_ARGUMENTS = ("repo_id", "commit_message", "commit_description", "private", "token", "revision", "create_pr",
                   "tags", "api")
#: Keyword arguments of :meth:`NstBaseTokenizer.encode_signal` that override the saved preprocessing.
_OVERRIDABLE = {f.name for f in fields(PreprocessingConfig)} | {"do_normalize"}


def _batches_of_samples(records: Iterable[SignalRecord], batch_samples: float) -> Iterator[list[SignalRecord]]:
    """Consecutive records in lists of at least ``batch_samples`` samples (the last may hold fewer)."""
    pending: list[SignalRecord] = []
    pending_samples = 0
    for record in records:
        pending.append(record)
        pending_samples += record.num_samples
        if pending_samples >= batch_samples:
            yield pending
            pending, pending_samples = [], 0
    if pending:
        yield pending


def _signal_batch(signals) -> tuple[list[np.ndarray], bool]:
    """``(list of 1-D signals, whether one signal was given)`` from an array, a tensor or a list of them."""
    def as_array(signal):
        return signal.detach().cpu().numpy() if hasattr(signal, "detach") else np.asarray(signal)

    if isinstance(signals, (list, tuple)):
        return [as_array(s) for s in signals], False
    array = as_array(signals)
    if array.ndim == 1:
        return [array], True
    if array.ndim == 2:
        return list(array), False
    raise InvalidSignalError(f"signals= takes a 1-D signal, a list of them or a 2-D [batch, samples] array, "
                             f"got an array of shape {array.shape}")


class NstBaseTokenizer(EarlierToolMethods, PreTrainedTokenizer):
    """Shared behaviour of :class:`NstVQTokenizer`, :class:`NstRVQTokenizer` and :class:`NstKMeansTokenizer`.

    Vocabulary: the bwav token strings (``K`` codes, or ``n_q * K`` for RVQ with id ``level * K + code``)
    followed by the special tokens ``<|bwav_bos|>``, ``<|bwav_eos|>``, ``<|bwav_unk|>``, ``<|bwav_pad|>``.
    """

    bwav_kind: str = ""
    is_rvq: bool = False
    model_input_names = ["input_ids", "attention_mask"]
    #: Set to a dict to have encoding add the seconds it spends in each stage to it (``"encoder"``, ``"search"``;
    #: from records also ``"read"`` and ``"preprocess"``, and in the pipeline ``"write"``), as ``nst-hf bench``
    #: reports them; ``None`` (the default) times nothing.
    stage_seconds: dict[str, float] | None = None
    #: Each timed block counts this share of its wall time: ``1 / n`` while ``n`` workers run stages in parallel.
    _stage_share: float = 1.0

    def __init__(self, *, codebook_size: int, num_quantizers: int = 1, preprocessing: PreprocessingConfig,
                 bwav_kind: str | None = None, special_tokens_pattern: str = "none", **kwargs):
        if bwav_kind is not None and bwav_kind != self.bwav_kind:
            raise CheckpointError(self._wrong_kind_message(bwav_kind))
        self.codebook_size = int(codebook_size)
        self.num_quantizers = int(num_quantizers)
        self.preprocessing = preprocessing
        self.default_token_type = kwargs.pop("default_token_type", None)
        if self.is_rvq:
            self._base_vocab = {f"<|bwav:L{q + 1}_{i}|>": q * self.codebook_size + i
                                for q in range(self.num_quantizers) for i in range(self.codebook_size)}
        else:
            self._base_vocab = {f"<|bwav:{i}|>": i for i in range(self.codebook_size)}
        self._ids_to_tokens = {v: k for k, v in self._base_vocab.items()}
        for key in ("is_local", "local_files_only"):
            kwargs.pop(key, None)
        for name, token in SPECIAL_TOKENS.items():
            kwargs.setdefault(name, token)
        if kwargs.get("model_max_length") in (None, _OLD_NO_LIMIT):
            kwargs["model_max_length"] = DEFAULT_MAX_LENGTH
        kwargs.setdefault("auto_map", {"AutoTokenizer": [f"tokenization_nst_hf.{type(self).__name__}", None]})
        super().__init__(codebook_size=self.codebook_size, num_quantizers=self.num_quantizers,
                         bwav_kind=self.bwav_kind, special_tokens_pattern=special_tokens_pattern, **kwargs)
        self.init_kwargs["special_tokens_pattern"] = special_tokens_pattern
        if self.default_token_type:
            self.init_kwargs["default_token_type"] = self.default_token_type

    @contextlib.contextmanager
    def _stage(self, name: str, synchronize=None):
        """Add the block's wall time to ``stage_seconds[name]`` when timing is on (``synchronize()`` first
        waits for a device's queued work, so that it is counted in its own stage)."""
        if self.stage_seconds is None:
            yield
            return
        start = time.perf_counter()
        try:
            yield
            if synchronize is not None:
                synchronize()
        finally:
            spent = (time.perf_counter() - start) * self._stage_share
            with _STAGE_LOCK:
                self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + spent

    # ------------------------------------------------------------------ loading helpers

    @classmethod
    def _wrong_kind_message(cls, found: str) -> str:
        names = {"vq": "NstVQTokenizer", "rvq": "NstRVQTokenizer", "kmeans": "NstKMeansTokenizer"}
        return (f"this folder holds a {found!r} tokenizer, not a {cls.bwav_kind!r} one; load it with "
                f"nst_hf.{names.get(found, 'AutoTokenizer')}.from_pretrained(...) or transformers.AutoTokenizer")

    def _require_files(self, kwargs: dict, *paths, preprocessor_file: str | None = None,
                       preprocessing=None) -> None:
        """Raise a clear error unless the folder holds all of this kind's files.

        ``transformers`` passes ``None`` for each file it did not find and would otherwise build a
        tokenizer from defaults; a folder missing its preprocessing or ``tokenizer_config.json``
        would give other tokens than the tokenizer that was saved.
        """
        if not all(paths):
            kind = kwargs.get("bwav_kind")
            if kind is not None and kind != self.bwav_kind:
                raise CheckpointError(self._wrong_kind_message(kind))
            raise CheckpointError(self._missing_files_message(" / ".join(self.vocab_files_names.values())))
        from nst_hf.tokenizers.files import require_inside_folder

        require_inside_folder(*paths, preprocessor_file)
        folder = os.path.dirname(str(paths[0]))
        missing = [name for name, present in ((PREPROCESSOR_FILE, preprocessor_file or preprocessing is not None),
                                              ("tokenizer_config.json", "bwav_kind" in kwargs)) if not present]
        if missing:
            raise CheckpointError(f"{kwargs.get('name_or_path') or folder}: the tokenizer folder lacks "
                                  f"{' and '.join(missing)}, so its tokens cannot be reproduced; save it again "
                                  "with save_pretrained, or restore the missing file(s)")

    @classmethod
    def _load(cls, name_or_path, kind: str, suffixes: tuple[str, ...], args: tuple, kwargs: dict):
        """``from_pretrained`` of every kind: an upstream file (``suffixes``), a folder or Hub repo holding one
        (found by :func:`~nst_hf.models.upstream_source.find_upstream_file`), else a saved tokenizer."""
        from nst_hf.models.upstream_source import LOCATION_KWARGS, find_upstream_file, pop_location
        from nst_hf.pretrained import resolve_builtin

        path = Path(str(name_or_path))
        if path.suffix in suffixes and path.is_file():
            pop_location(kwargs)
            return cls.from_upstream(path, **kwargs)
        name = resolve_builtin(name_or_path)
        found = find_upstream_file(name, kind, **{k: kwargs.get(k) for k in LOCATION_KWARGS})
        if found is not None:
            pop_location(kwargs)
            return cls.from_upstream(found.path, source=found.source, **kwargs)
        kwargs.pop("filename", None)
        return super().from_pretrained(name, *args, **kwargs)

    @classmethod
    def _missing_files_message(cls, what: str) -> str:
        return (f"no {what} found, so there is nothing to tokenize with: the path or repo id is not a saved "
                f"{cls.__name__} (an empty folder, an unknown repo id offline, or a tokenizer of another kind). "
                f"Pass a folder written by save_pretrained, a Hub repo id, or an upstream checkpoint file.")

    @staticmethod
    def _check_saved_sizes(kwargs: dict, codebook_size: int, num_quantizers: int) -> None:
        """Drop the sizes recorded in tokenizer_config.json after checking them against the weights."""
        for key, actual in (("codebook_size", codebook_size), ("num_quantizers", num_quantizers)):
            saved = kwargs.pop(key, None)
            if saved is not None and int(saved) != int(actual):
                raise CheckpointError(f"tokenizer_config.json says {key}={saved} but the weights have {actual}; "
                                      "the folder mixes files of different tokenizers")

    @staticmethod
    def _load_training_info(training_file: str | None) -> dict | None:
        if not training_file:
            return None
        import json

        with open(training_file, encoding="utf-8") as handle:
            return json.load(handle)

    def _save_training_info(self, save_directory: str, prefix: str) -> str:
        from nst_hf.output import atomic_write_json

        path = os.path.join(save_directory, prefix + TRAINING_FILE)
        atomic_write_json(path, self.training_info)
        return path

    @staticmethod
    def _load_preprocessing(preprocessor_file, preprocessing, default: PreprocessingConfig) -> PreprocessingConfig:
        if isinstance(preprocessing, PreprocessingConfig):
            return preprocessing
        if isinstance(preprocessing, dict):
            return PreprocessingConfig.from_dict(preprocessing)
        if preprocessor_file:
            return PreprocessingConfig.load(preprocessor_file)
        return default

    # ------------------------------------------------------------------ text side (LM tokenizer)

    @property
    def vocab_size(self) -> int:
        return len(self._base_vocab)

    def get_vocab(self) -> dict[str, int]:
        vocab = dict(self._base_vocab)
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        tokens, position = [], 0
        for match in TOKEN_RE.finditer(text):
            if text[position:match.start()].strip():
                tokens.append(self.unk_token)
            tokens.append(match.group(0))
            position = match.end()
        if text[position:].strip():
            tokens.append(self.unk_token)
        return tokens

    def _convert_token_to_id(self, token: str) -> int:
        return self._base_vocab.get(token, self.unk_token_id)

    def _convert_id_to_token(self, index: int) -> str:
        return self._ids_to_tokens.get(index, self.unk_token)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    # ------------------------------------------------------------------ signal side

    @property
    def sampling_rate(self) -> float | None:
        """The rate (Hz) the tokenizer expects; ``None`` means not recorded (no check)."""
        return self.preprocessing.sampling_rate

    @property
    def frame_rate(self) -> float | None:
        """Tokens per second per level at :attr:`sampling_rate`."""
        return self.sampling_rate / self.samples_per_token if self.sampling_rate else None

    @property
    def samples_per_token(self) -> int:
        raise NotImplementedError

    @property
    def token_centre(self) -> int:
        """Offset (samples) from a frame's first sample to its centre: frame ``t`` is centred on sample
        ``t * samples_per_token + token_centre``."""
        return self.samples_per_token // 2

    def num_levels(self, token_type: str | None = None) -> int:
        """Code levels per frame for ``token_type`` (``"Lk"``: the first k RVQ levels; ``None``: the default)."""
        token_type = token_type or self.default_token_type
        if token_type is None:
            return self.num_quantizers if not self.is_rvq else 1
        valid = [f"L{k}" for k in range(1, self.num_quantizers + 1)]
        if token_type not in valid:
            raise ValueError(f"token_type must be one of {valid} for this {self.bwav_kind} tokenizer, got {token_type!r}")
        return int(token_type[1:])

    def _effective_config(self, do_normalize: bool | None = None, **overrides) -> PreprocessingConfig:
        changes = {key: value for key, value in overrides.items() if value is not None}
        if do_normalize is not None:
            changes["normalization"] = "med_mad" if do_normalize else "none"
        return self.preprocessing.replace(**changes) if changes else self.preprocessing

    def _check_rate(self, sampling_rate: float | None, resample: bool) -> tuple[float | None, bool]:
        """Return (rate to use for filters, whether to resample)."""
        expected = self.sampling_rate
        low, high = PLAUSIBLE_SAMPLING_RATES
        if sampling_rate is not None and not low <= float(sampling_rate) <= high:
            raise InvalidSignalError(f"sampling rate {sampling_rate:g} Hz is outside the plausible range "
                                     f"{low:g}-{high:g} Hz of nanopore reads (damaged metadata?)")
        if sampling_rate is None:
            if expected is not None:
                logger.debug("no sampling_rate given; assuming the tokenizer's %g Hz", expected)
            return expected, False
        if expected is None or abs(float(sampling_rate) - float(expected)) < 1e-6:
            return float(sampling_rate), False
        if not resample:
            raise InvalidSignalError(
                f"signal sampled at {sampling_rate:g} Hz but this tokenizer was trained at {expected:g} Hz; "
                "pass resample=True (on the command line: --resample) to resample it, or use a tokenizer trained "
                "at this rate"
            )
        if expected / float(sampling_rate) > MAX_RESAMPLE_GROWTH:
            raise InvalidSignalError(f"resampling {sampling_rate:g} Hz to {expected:g} Hz would make the read more "
                                     f"than {MAX_RESAMPLE_GROWTH:g} times longer; refusing (damaged metadata?)")
        return float(sampling_rate), True

    def preprocess_signal(self, signal_pa, sampling_rate: float | None = None, resample: bool = False,
                          config: PreprocessingConfig | None = None) -> np.ndarray:
        """The float32 signal the encoder sees: sampling-rate check (and optional resampling) + preprocessing.

        Returns an empty array for a constant signal (which has no tokens, as in the earlier tool).
        """
        config = config or self.preprocessing
        rate, do_resample = self._check_rate(sampling_rate, resample)
        signal = np.asarray(signal_pa, dtype=np.float32)
        if signal.ndim != 1:
            raise InvalidSignalError(f"expected a 1-D signal in pA, got an array of shape {signal.shape}")
        if do_resample:
            signal = resample_signal(signal, rate, self.sampling_rate)
            rate = self.sampling_rate
        if signal.size == 0:
            return signal
        try:
            return preprocess(signal, config, sampling_rate=rate)
        except ConstantSignalError:
            logger.debug("constant signal of %d samples has no tokens", signal.size)
            return np.zeros(0, dtype=np.float32)

    def _encode_preprocessed(self, signals: list[np.ndarray], levels: int) -> list[np.ndarray]:
        """Codes ``[T, levels]`` (int64) for each preprocessed signal; implemented by subclasses."""
        raise NotImplementedError

    def encode_preprocessed(self, signals: Iterable[np.ndarray], token_type: str | None = None) -> list[np.ndarray]:
        """Codes ``[T, levels]`` (int64) for signals that already went through :meth:`preprocess_signal`."""
        return self._encode_preprocessed([np.asarray(s, dtype=np.float32) for s in signals],
                                         self.num_levels(token_type))

    def flops_per_sample(self, token_type: str | None = None) -> dict[str, float]:
        """Floating-point operations per input sample: ``{"encoder": ..., "search": ...}``."""
        raise NotImplementedError

    def encode_signals_to_codes(self, signals: Iterable, sampling_rates=None, token_type: str | None = None,
                                resample: bool = False, **overrides) -> list[np.ndarray]:
        """Codes ``[T, levels]`` for many pA signals at once (windows of all reads share batches).

        ``overrides`` replace fields of the saved :class:`~nst_hf.preprocessing.PreprocessingConfig` for
        this call (``do_normalize=False`` turns normalisation off).
        """
        signals = list(signals)
        if sampling_rates is None or np.isscalar(sampling_rates):
            sampling_rates = [sampling_rates] * len(signals)
        levels = self.num_levels(token_type)
        config = self._effective_config(**overrides)
        outcomes = self._preprocess_many(signals, sampling_rates, resample, config)
        for _, error in outcomes:
            if error is not None:
                raise error
        return self._encode_preprocessed([signal for signal, _ in outcomes], levels)

    def _preprocess_many(self, signals: list, sampling_rates: list, resample: bool,
                         config: PreprocessingConfig | None = None) -> list[tuple[np.ndarray | None, Exception | None]]:
        """``(preprocessed signal, None)`` or ``(None, error)`` per signal (a pA array or a
        :class:`SignalRecord`), several signals at once on threads.

        NumPy, SciPy and nst_hf's running median release the GIL for most of their work, so the
        single-threaded chains of different reads (notably the K-Means chain) run in parallel.
        """
        def one(signal_and_rate) -> tuple[np.ndarray | None, Exception | None]:
            signal, rate = signal_and_rate
            try:
                if isinstance(signal, SignalRecord):  # calibration can fail: it belongs to this read's outcome
                    signal = signal.signal_pa
                return self.preprocess_signal(signal, rate, resample, config), None
            except (NstHfError, ValueError) as exc:
                return None, exc
            except MemoryError:  # one huge read must not end a whole run
                return None, InvalidSignalError(f"not enough memory to preprocess a read of {np.size(signal):,} samples")

        pairs = list(zip(signals, sampling_rates))
        threads = min(compute_threads(), len(pairs))
        if threads < 2:
            return [one(pair) for pair in pairs]
        return list(thread_pool("preprocess", threads).map(one, pairs))

    def encode_signal(self, signal_pa, token_type: str | None = None, sampling_rate: float | None = None,
                      resample: bool = False, **kwargs) -> list[int]:
        """Token ids of one pA signal (VQ/K-Means: the codes; RVQ: ``level * K + code``).

        Like ``tokenizer.encode(text)``, it takes the text path's arguments (``truncation``, ``max_length``,
        ``padding``, ...); preprocessing fields (``median_kernel=``, ``do_normalize=``) override the saved
        preprocessing for this call.
        """
        overrides = {key: kwargs.pop(key) for key in list(kwargs) if key in _OVERRIDABLE}
        (codes,) = self.encode_signals_to_codes([signal_pa], [sampling_rate], token_type, resample, **overrides)
        ids = codes_to_ids(codes, self.codebook_size, self.is_rvq).tolist()
        return super().__call__(ids or "", **kwargs)["input_ids"] if kwargs else ids

    def signal_to_text(self, signal_pa, token_type: str | None = None, sampling_rate: float | None = None,
                       resample: bool = False, **overrides) -> str:
        """Token text of one pA signal."""
        (codes,) = self.encode_signals_to_codes([signal_pa], [sampling_rate], token_type, resample, **overrides)
        return codes_to_text(codes, self.is_rvq)

    def __call__(self, text=None, *args, signals=None, sampling_rate=None, token_type: str | None = None,
                 resample: bool = False, **kwargs) -> BatchEncoding:
        """Text → ids as any tokenizer; ``signals=`` → the same :class:`~transformers.BatchEncoding` for pA signals.

        ``signals`` is one 1-D array, a list of them (NumPy or torch) or a 2-D ``[batch, samples]`` array.
        Every text-path argument means the same here (``padding``, ``truncation``, ``max_length``,
        ``pad_to_multiple_of``, ``padding_side``, ``return_attention_mask``, ``return_tensors``,
        ``return_length``, ...): the signals' ids go through the same code. Without ``sampling_rate`` the
        tokenizer's own rate is assumed, with a warning the first time.
        """
        if signals is None:
            return super().__call__(text, *args, **kwargs)
        if text is not None or args:
            raise ValueError("pass either text or signals=, not both")
        batch, single = _signal_batch(signals)
        if sampling_rate is None:
            self._warn_assumed_rate()
        codes = self.encode_signals_to_codes(batch, sampling_rate, token_type, resample)
        ids = [codes_to_ids(c, self.codebook_size, self.is_rvq).tolist() or "" for c in codes]  # "" = no tokens
        return super().__call__(ids[0] if single else ids, **kwargs)

    def _warn_assumed_rate(self) -> None:
        if self.sampling_rate is None or getattr(self, "_warned_assumed_rate", False):
            return
        self._warned_assumed_rate = True
        logger.warning("no sampling_rate given: assuming this tokenizer's %g Hz; pass sampling_rate= so that reads "
                       "at another rate are refused (or resampled with resample=True)", self.sampling_rate)

    # ------------------------------------------------------------------ identity

    def _fingerprint_arrays(self) -> dict[str, np.ndarray]:
        """The arrays that decide the tokens (weights, centroids); implemented by subclasses."""
        raise NotImplementedError

    def _fingerprint_config(self) -> dict:
        return {"class": type(self).__name__, "codebook_size": self.codebook_size,
                "num_quantizers": self.num_quantizers, "preprocessing": self.preprocessing.to_dict(),
                "default_token_type": self.default_token_type}

    def fingerprint(self) -> str:
        """A SHA-256 of everything that decides this tokenizer's tokens: weights or centroids, the model
        configuration and the preprocessing. Two tokenizers with the same fingerprint give the same tokens."""
        import hashlib
        import json

        digest = hashlib.sha256(json.dumps(self._fingerprint_config(), sort_keys=True, default=str).encode())
        for name, array in sorted(self._fingerprint_arrays().items()):
            array = np.ascontiguousarray(array)
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))
        return digest.hexdigest()

    @property
    def min_samples_for_tokens(self) -> int:
        """The shortest preprocessed signal that has a token."""
        return 1

    def no_tokens_reason(self, num_samples: int) -> str:
        """Why a read of ``num_samples`` samples gave no tokens (for reports)."""
        minimum = self.min_samples_for_tokens
        if num_samples < minimum:
            return f"too short to tokenize: {num_samples} samples, this tokenizer needs at least {minimum}"
        return "no tokens: the signal is constant (median absolute deviation 0) or too short after resampling"

    # ------------------------------------------------------------------ reads

    def iter_tokenized(self, records: Iterable[SignalRecord], token_type: str | None = None,
                       on_error: str = "raise", resample: bool = False,
                       batch_samples: int = DEFAULT_BATCH_SAMPLES,
                       prefetch: bool | None = None) -> Iterator[tuple[SignalRecord, np.ndarray | None, str | None]]:
        """Yield ``(record, codes, error)`` for each record, encoding reads in batches of ~``batch_samples``.

        With ``on_error="skip"`` a read that cannot be tokenized yields ``codes=None`` and its reason;
        with ``"raise"`` the reads before it are yielded, then the error propagates naming the read.
        ``prefetch=True`` (default: ``NST_HF_PREFETCH=1``) reads and preprocesses the next batch on a thread
        while this one is encoded; at most one batch waits, so memory stays bounded. It is off by default: on a
        2-core machine whose cores the encoder already fills it gained nothing (``nst-hf bench pipeline``, 3
        runs: 0.86 against 0.92 of the tokenizer alone); it can hide slow storage.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        levels = self.num_levels(token_type)
        if prefetch is None:
            prefetch = batch_samples != float("inf") and os.environ.get("NST_HF_PREFETCH", "0") == "1"
        prepared = ((batch, self._timed_preprocess(batch, resample))
                    for batch in _batches_of_samples(self._timed_reads(records), batch_samples))
        for batch, outcomes in (ahead(prepared) if prefetch else prepared):
            errors: dict[int, str] = {}
            failed = None  # with on_error="raise": the first bad read; the reads before it are still yielded
            for i, (record, (_, exc)) in enumerate(zip(batch, outcomes)):
                if exc is None:
                    continue
                if on_error == "raise":
                    failed = i
                    break
                logger.warning("skipping read %s: %s", record.read_id, exc)
                errors[i] = str(exc)
            good = [i for i in range(len(batch) if failed is None else failed) if i not in errors]
            codes = self._encode_preprocessed([outcomes[i][0] for i in good], levels) if good else []
            by_index = dict(zip(good, codes))
            for i, record in enumerate(batch[:failed]):
                yield record, by_index.get(i), errors.get(i)
            if failed is not None:
                record, exc = batch[failed], outcomes[failed][1]
                raise InvalidReadError(f"{record.source_file or '<memory>'}: read {record.read_id}: {exc}",
                                       path=record.source_file, read_id=record.read_id) from exc

    def _timed_reads(self, records: Iterable[SignalRecord]) -> Iterable[SignalRecord]:
        """``records``, with the time spent getting each one (a file reader reading it) added to the ``"read"``
        stage when timing is on."""
        if self.stage_seconds is None:
            return records

        def timed():
            iterator = iter(records)
            while True:
                with self._stage("read"):
                    record = next(iterator, None)
                if record is None:
                    return
                yield record

        return timed()

    def _timed_preprocess(self, batch: list[SignalRecord], resample: bool) -> list:
        with self._stage("preprocess"):
            return self._preprocess_many(batch, [r.sampling_rate for r in batch], resample)

    # ------------------------------------------------------------------ saving

    def _save_preprocessing(self, save_directory: str, prefix: str) -> str:
        path = os.path.join(save_directory, prefix + PREPROCESSOR_FILE)
        self.preprocessing.save(path)
        return path

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        """Write the tokenizer folder plus ``tokenizer.json``, the remote-code shim, a model card and (unless the
        folder has one, e.g. an LM's) a ``config.json`` naming ``model_type: nst_bwav``, which lets
        ``AutoTokenizer`` load the repo offline from a cache that ``hf download`` wrote.

        With ``push_to_hub=True`` the folder is then uploaded as by :meth:`push_to_hub` (``repo_id``
        defaults to the folder's name; ``commit_message``, ``commit_description``, ``create_pr``,
        ``revision``, ``private``, ``token`` and ``tags`` are forwarded), as in transformers.
        """
        from nst_hf.tokenizers.hub_files import (write_marker_config, write_model_card, write_remote_code_shim,
                                                 write_tokenizers_json)

        push = {key: kwargs.pop(key) for key in _PUSH_ARGUMENTS if key in kwargs}
        card_repo, tags = push.get("repo_id"), push.get("tags")
        files = super().save_pretrained(save_directory, *args, **kwargs)
        write_tokenizers_json(self, save_directory)
        write_remote_code_shim(save_directory)
        write_model_card(self, save_directory, card_repo, tags)
        write_marker_config(save_directory)
        if push_to_hub:
            repo_id = push.pop("repo_id", None) or os.path.basename(os.path.abspath(save_directory))
            self.push_to_hub(repo_id, **push)
        return files

    def push_to_hub(self, repo_id: str, commit_message: str | None = None, commit_description: str | None = None,
                    private: bool | None = None, token: str | None = None, revision: str | None = None,
                    create_pr: bool = False, tags: list[str] | None = None, api=None, **kwargs):
        """Save to a temporary folder and upload it whole (tokenizer files, weights, shim, model card).

        The arguments mean what they mean in transformers: ``create_pr=True`` opens a pull request instead
        of committing to ``revision``; ``tags`` go into the model card. Returns the commit information.
        """
        import tempfile

        from huggingface_hub import HfApi

        if kwargs:
            raise TypeError(f"push_to_hub() got unexpected arguments {sorted(kwargs)}")
        api = api or HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, repo_id=repo_id, tags=tags)
            return api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="model",
                                     commit_message=commit_message or f"Upload {type(self).__name__}",
                                     commit_description=commit_description, revision=revision, create_pr=create_pr)

    # model-card facts each subclass fills in
    def card_facts(self) -> dict:
        return {"kind": self.bwav_kind, "codebook_size": self.codebook_size, "num_quantizers": self.num_quantizers,
                "samples_per_token": self.samples_per_token, "sampling_rate": self.sampling_rate,
                "frame_rate": self.frame_rate, "preprocessing": self.preprocessing.to_dict()}
