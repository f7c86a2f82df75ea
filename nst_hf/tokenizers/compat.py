"""The earlier ``nanopore_signal_tokenizer`` tool's names, kept so its users' code runs unchanged.

- ``tokenize_data(signal, medf=, lpf=, do_normalize=)`` and ``tokenize_read(record)``: token strings;
- ``tokenize_fast5(path, output_path)``: a file job, which runs :func:`nst_hf.pipeline.tokenize_file`
  (the one place below the pipeline that calls into it, at call time);
- ``VQTokenizer``, ``RVQTokenizer``, ``KmeansTokenizer``: the three classes under their old names.

New code should use :meth:`~nst_hf.tokenizers.base.NstBaseTokenizer.encode_signals_to_codes`,
``tokenizer(signals=...)`` and :mod:`nst_hf.pipeline` instead.
"""

from __future__ import annotations

from nst_hf.tokenizers.vocab import codes_to_tokens

#: Old class name -> (module, class) of the class it names.
_ALIASES = {"VQTokenizer": ("nst_hf.tokenizers.neural", "NstVQTokenizer"),
            "RVQTokenizer": ("nst_hf.tokenizers.neural", "NstRVQTokenizer"),
            "KmeansTokenizer": ("nst_hf.tokenizers.kmeans", "NstKMeansTokenizer")}


class EarlierToolMethods:
    """The earlier tool's tokenizer methods, mixed into every nst_hf tokenizer."""

    def tokenize_data(self, signal_pa, do_normalize: bool | None = None, medf: int | None = None,
                      lpf: float | None = None, token_type: str | None = None, sampling_rate: float | None = None,
                      resample: bool = False) -> list[str]:
        """Token strings of one pA signal.

        ``do_normalize``, ``medf`` (median kernel) and ``lpf`` (low-pass cutoff in Hz) override the saved
        preprocessing when given (``None`` keeps it); ``token_type="Lk"`` emits the first k RVQ levels.
        """
        (codes,) = self.encode_signals_to_codes(
            [signal_pa], [sampling_rate], token_type, resample, do_normalize=do_normalize,
            median_kernel=None if medf is None else int(medf), lowpass_cutoff_hz=None if lpf is None else float(lpf))
        return codes_to_tokens(codes, self.is_rvq)

    def tokenize_read(self, record, token_type: str | None = None, resample: bool = False) -> list[str]:
        """Token strings of one :class:`~nst_hf.io.SignalRecord` (its own sampling rate is checked)."""
        return self.tokenize_data(record.signal_pa, token_type=token_type, sampling_rate=record.sampling_rate,
                                  resample=resample)

    def tokenize_fast5(self, path, output_path, **kwargs):
        """Tokenize a signal file (any supported format) into JSON lines: :func:`nst_hf.pipeline.tokenize_file`."""
        from nst_hf.pipeline import tokenize_file

        return tokenize_file(self, path, output_path, **kwargs)


def __getattr__(name: str):
    if name in _ALIASES:
        from importlib import import_module

        module, attribute = _ALIASES[name]
        return getattr(import_module(module), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
