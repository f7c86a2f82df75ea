"""VQ and RVQ tokenizers: a conv encoder + codebook(s), windows of many reads encoded in shared batches."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from nst_hf._threads import compute_threads, thread_pool
from nst_hf.chunking import min_margin, num_frames, plan_windows
from nst_hf.errors import CheckpointError
from nst_hf.models.conv_vq import NstConvVQConfig, NstConvVQModel
from nst_hf.models.upstream_source import CHECKPOINT_SUFFIXES, pop_location
from nst_hf.output import atomic_path
from nst_hf.preprocessing import PreprocessingConfig
from nst_hf.tokenizers.base import PREPROCESSOR_FILE, TRAINING_FILE, NstBaseTokenizer

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "bwav_tokenizer.safetensors"
MODEL_CONFIG_FILE = "bwav_model_config.json"
UPSTREAM_SUFFIXES = CHECKPOINT_SUFFIXES
#: Shortest VQ signal with tokens (the earlier tool's documented minimum); RVQ has none.
VQ_MIN_SAMPLES = 25
#: A larger minimum read length is a damaged config (it would silently drop every read).
MAX_MIN_SAMPLES = 100_000


SEARCH_ROWS = 8192


class _NeuralTokenizer(NstBaseTokenizer):
    """Shared VQ/RVQ implementation."""

    vocab_files_names = {"weights_file": WEIGHTS_FILE, "model_config_file": MODEL_CONFIG_FILE,
                         "preprocessor_file": PREPROCESSOR_FILE, "training_file": TRAINING_FILE}

    def __init__(self, weights_file: str | None = None, model_config_file: str | None = None,
                 preprocessor_file: str | None = None, model: NstConvVQModel | None = None,
                 preprocessing: PreprocessingConfig | dict | None = None, min_samples: int | None = None,
                 device: str | None = None, window_frames: int = 500, batch_windows: int = 4,
                 training_info: dict | None = None, training_file: str | None = None, **kwargs):
        if model is None:
            self._require_files(kwargs, weights_file, model_config_file, preprocessor_file=preprocessor_file,
                                preprocessing=preprocessing)
            model = self._load_weights(weights_file, model_config_file)
        self.model = model.eval()
        self._validate_model(model.config)
        self._check_saved_sizes(kwargs, model.config.codebook_size, model.config.num_quantizers)
        self.training_info = training_info or self._load_training_info(training_file)
        self.min_samples = VQ_MIN_SAMPLES if min_samples is None and not self.is_rvq else int(min_samples or 0)
        if not 0 <= self.min_samples <= MAX_MIN_SAMPLES:
            raise CheckpointError(f"min_samples must be between 0 and {MAX_MIN_SAMPLES:,} samples, got {self.min_samples:,}")
        self.window_frames = int(window_frames)
        self.batch_windows = int(batch_windows)
        #: Latent rows gathered from several encoder batches before one codebook search (fewer hand-overs
        #: between torch's threads and the search kernel's).
        self.search_rows = SEARCH_ROWS
        #: ``False`` encodes through the plain ``nn.Sequential`` layers (the reference) instead of the folded,
        #: channels-last fast form; ``NST_HF_PLAIN_ENCODER=1`` does the same for every tokenizer.
        self.fast_encoder = True
        #: CPU threads that each encode and search a share of the batches with one torch thread (``None``:
        #: torch's thread count; ``1``: one worker for all of them, also on one torch thread, so that a read's
        #: latents never depend on the batch it shares or on the thread count).
        self.encode_workers: int | None = None
        self.margin_frames = min_margin(model.config.receptive_field, model.config.downsample_rate)
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        preprocessing = self._load_preprocessing(preprocessor_file, preprocessing, PreprocessingConfig())
        super().__init__(codebook_size=model.config.codebook_size, num_quantizers=model.config.num_quantizers,
                         preprocessing=preprocessing, min_samples=self.min_samples, **kwargs)

    def _validate_model(self, config: NstConvVQConfig) -> None:
        if self.is_rvq != (config.architecture == "rvq"):
            other = "NstRVQTokenizer" if config.architecture == "rvq" else "NstVQTokenizer"
            raise CheckpointError(f"this checkpoint is a {config.architecture} model; load it with nst_hf.{other}")

    @staticmethod
    def _load_weights(weights_file: str, model_config_file: str) -> NstConvVQModel:
        """Config checked, then every tensor's shape from the file's header, then the weights' values
        (``_require_files`` has checked that both files lie inside their folder)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            config = NstConvVQConfig.load(model_config_file)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{model_config_file}: {exc}") from exc
        expected = {name: tuple(shape) for name, shape in NstConvVQModel.state_shapes(config).items()}
        try:
            with safe_open(weights_file, framework="pt") as handle:
                stored = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
        except Exception as exc:
            raise CheckpointError(f"{weights_file}: not a readable safetensors file ({exc})") from exc
        for name in sorted(set(expected) | set(stored)):
            if expected.get(name) != stored.get(name):
                raise CheckpointError(f"{weights_file}: tensor {name} has shape {stored.get(name)} but "
                                      f"{model_config_file} needs {expected.get(name)}; the files do not belong together")
        model = NstConvVQModel(config)
        state = load_file(weights_file)
        for name, tensor in state.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"{weights_file}: tensor {name} contains NaN or infinite values")
        model.load_state_dict(state, strict=True)
        return model

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load a saved folder, a Hub repo id, ``"default"``, or an earlier-tool checkpoint: a ``.pth`` file, or
        a folder or Hub repo that holds one (``filename=`` picks one of several; ``revision=``, ``subfolder=``,
        ``cache_dir=``, ``local_files_only=`` and ``token=`` as for any Hub download).
        ``sampling_rate=`` records a converted checkpoint's rate."""
        return cls._load(pretrained_model_name_or_path, "neural", UPSTREAM_SUFFIXES, args, kwargs)

    @classmethod
    def from_upstream(cls, path: str | os.PathLike, preprocessing: PreprocessingConfig | None = None,
                      sampling_rate: float | None = None, model: NstConvVQModel | None = None,
                      source: str | None = None, **kwargs):
        """Build from an earlier-tool checkpoint (VQ dict with ``cnn_type``, or RVQ state dict).

        ``model`` is the checkpoint already loaded with :func:`~nst_hf.models.upstream.load_upstream_model`;
        ``source`` says where the file came from (a Hub repo and revision), for the model card.
        """
        from nst_hf.models.upstream import load_upstream_model

        pop_location(kwargs)  # Hub loading arguments mean nothing here and must not be saved with the tokenizer
        model = model or load_upstream_model(path)
        preprocessing = preprocessing or PreprocessingConfig(sampling_rate=sampling_rate)
        origin = source or Path(path).name
        info = {"description": f"Converted from the earlier nanopore_signal_tokenizer checkpoint `{origin}`. Its licence is that of the original "
                                "file, which is not recorded here."}
        return cls(model=model, preprocessing=preprocessing, training_info=info, name_or_path=str(path), **kwargs)

    def to(self, device: str | torch.device):
        """Move the model to ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``); returns self."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    # ------------------------------------------------------------------ encoding

    @property
    def samples_per_token(self) -> int:
        return self.model.config.downsample_rate

    @property
    def min_samples_for_tokens(self) -> int:
        return max(self.min_samples, 1)

    def flops_per_sample(self, token_type: str | None = None) -> dict[str, float]:
        """Encoder convolutions and the nearest-code search (``2·K·D`` per frame per level) per input sample."""
        config = self.model.config
        encoder, jump = 0.0, 1
        for cin, cout, kernel, stride in config.layers:
            jump *= stride
            encoder += 2.0 * cin * cout * kernel / jump
        search = 2.0 * config.codebook_size * config.dim * self.num_levels(token_type) / config.downsample_rate
        return {"encoder": encoder, "search": search}

    def _fingerprint_arrays(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def _fingerprint_config(self) -> dict:
        return {**super()._fingerprint_config(), "model": self.model.config.to_dict(), "min_samples": self.min_samples}

    def _encode_preprocessed(self, signals: list[np.ndarray], levels: int) -> list[np.ndarray]:
        d = self.model.config.downsample_rate
        margin, core = self.margin_frames, self.window_frames
        width = core + 2 * margin
        results: list[np.ndarray] = []
        full: list[tuple[int, object, np.ndarray]] = []     # windows of exactly `width` frames
        short: dict[int, list[tuple[int, object, np.ndarray]]] = {}  # single windows, grouped by length
        for index, signal in enumerate(signals):
            frames = num_frames(signal.size, d) if signal.size >= max(self.min_samples, 1) else 0
            results.append(np.empty((frames, levels), dtype=np.int64))
            if frames == 0:
                continue
            padded = np.zeros((frames + margin) * d, dtype=np.float32)
            padded[:signal.size] = signal
            for window in plan_windows(frames, core, margin):
                piece = padded[window.start * d:window.end * d]
                if window.length == width:
                    full.append((index, window, piece))
                else:
                    short.setdefault(window.length, []).append((index, window, piece))
        groups = _batches(full, self.batch_windows)
        for items in short.values():
            groups += _batches(items, max(1, self.batch_windows * width // max(items[0][1].length, 1)))
        if self.device.type != "cpu":
            self._encode_groups(groups, levels, results)
            return results
        # Every CPU batch runs on a worker's one torch thread, a lone batch too: with several threads in one call,
        # some CPUs' convolutions (AMD Zen 3, AVX2) round by the batch size, so a read's tokens could depend on the
        # reads beside it.
        workers = max(1, min(self.encode_workers or compute_threads(), len(groups)))
        main_threads = torch.get_num_threads()
        self._stage_share = 1.0 / workers  # stage times: wall time of the parallel section, not thread time
        try:
            pool = thread_pool("encode", workers)
            shares = [groups[i::workers] for i in range(workers)]
            for future in [pool.submit(self._encode_groups_on_one_thread, share, levels, results) for share in shares]:
                future.result()
        finally:
            self._stage_share = 1.0
            torch.set_num_threads(main_threads)  # the workers' setting also changed torch's default for new threads
        return results

    def _encode_groups_on_one_thread(self, groups: list, levels: int, results: list[np.ndarray]) -> None:
        """A worker's share of the batches, encoded and searched with one torch thread (workers run in parallel)."""
        if torch.get_num_threads() != 1:  # per OS thread; a pool thread keeps it
            torch.set_num_threads(1)
        self._encode_groups(groups, levels, results)

    def _encode_groups(self, groups: list, levels: int, results: list[np.ndarray]) -> None:
        """Encode batches of windows and search their latent rows, writing each window's codes to ``results``."""
        with torch.inference_mode():
            pending, pending_rows = [], 0
            for group in groups:
                with self._stage("encoder", self._synchronize):
                    vectors = self._latent_vectors(group)
                pending.append((group, vectors))
                pending_rows += vectors.shape[0]
                if pending_rows >= self.search_rows:
                    with self._stage("search"):
                        self._quantize_pending(pending, levels, results)
                    pending, pending_rows = [], 0
            if pending:
                with self._stage("search"):
                    self._quantize_pending(pending, levels, results)

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _latent_vectors(self, group) -> torch.Tensor:
        """Encode one batch of windows; the kept frames of every window as ``[frames, D]`` rows.

        A single window is encoded as a batch of two copies: torch runs a batch of one through other conv
        kernels whose fp32 results differ in the last bit, which could flip a near-tie token.
        """
        pieces = [piece for _, _, piece in group]
        batch = torch.from_numpy(np.stack(pieces * 2 if len(pieces) == 1 else pieces)).unsqueeze(1).to(self.device)
        with _full_fp32_convolutions(batch.device):
            latent = self.model.encode_frames(batch, fast=self.fast_encoder)  # [B, frames, D]
        kept = [latent[b, w.keep_start - w.start:w.keep_end - w.start] for b, (_, w, _) in enumerate(group)]
        return torch.cat(kept)

    def _quantize_pending(self, pending, levels: int, results: list[np.ndarray]) -> None:
        """Search the latent rows of several encoder batches at once and write each window's codes."""
        vectors = pending[0][1] if len(pending) == 1 else torch.cat([v for _, v in pending])
        codes = self.model.quantize(vectors, levels).cpu().numpy()
        offset = 0
        for group, _ in pending:
            for index, window, _ in group:
                count = window.keep_end - window.keep_start
                results[index][window.keep_start:window.keep_end] = codes[offset:offset + count]
                offset += count

    # ------------------------------------------------------------------ decoding

    def _ids_to_codes(self, ids) -> np.ndarray:
        if isinstance(ids, str):
            ids = self.convert_tokens_to_ids(self._tokenize(ids))
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        ids = ids[ids < self.vocab_size] if ids.size else ids  # drop special tokens
        if not self.is_rvq:
            return ids.reshape(-1, 1)
        levels, codes = ids // self.codebook_size, ids % self.codebook_size
        if levels.size == 0:
            return codes.reshape(0, 1)
        depth = int(np.argmax(levels[1:] == 0)) + 1 if (levels[1:] == 0).any() else levels.size
        expected = np.tile(np.arange(depth), -(-levels.size // depth))[:levels.size]
        if levels.size % depth or not np.array_equal(levels, expected):
            raise ValueError("RVQ ids must repeat levels L1..Lk frame by frame (as signal_to_text writes them)")
        return codes.reshape(-1, depth)

    def decode_to_signal(self, ids_or_text) -> np.ndarray:
        """Reconstruct a normalised signal (``len ≈ frames × samples_per_token``) through the decoder."""
        codes = self._ids_to_codes(ids_or_text)
        if codes.size == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            signal = self.model.decode_codes(torch.from_numpy(codes).to(self.device))
        return signal.float().cpu().numpy()

    # ------------------------------------------------------------------ saving

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        from safetensors.torch import save_file

        prefix = f"{filename_prefix}-" if filename_prefix else ""
        weights = os.path.join(save_directory, prefix + WEIGHTS_FILE)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_path(weights) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "nst_hf": "conv_vq"})
            os.chmod(tmp, 0o644)
        config = os.path.join(save_directory, prefix + MODEL_CONFIG_FILE)
        self.model.config.save(config)
        if self.training_info:
            self._save_training_info(save_directory, prefix)
        return weights, config, self._save_preprocessing(save_directory, prefix)

    def card_facts(self) -> dict:
        facts = super().card_facts()
        facts["architecture"] = (f"{self.model.config.architecture}: conv encoder, latent dim {self.model.config.dim}, "
                                 f"stride {self.model.config.downsample_rate}, receptive field "
                                 f"{self.model.config.receptive_field} samples")
        return facts


class NstVQTokenizer(_NeuralTokenizer):
    """VQ tokenizer: conv encoder + one codebook; text ``<|bwav:N|>``, id == code.

    Example
    -------
    >>> tok = NstVQTokenizer.from_pretrained("vq_cnn1_cb8192.pth")   # an earlier-tool checkpoint
    >>> tok.signal_to_text(read.signal_pa, sampling_rate=read.sampling_rate)
    """

    bwav_kind = "vq"
    is_rvq = False


class NstRVQTokenizer(_NeuralTokenizer):
    """RVQ tokenizer: conv encoder + residual codebooks; text ``<|bwav:L1_a|><|bwav:L2_b|>…``.

    ``token_type="Lk"`` emits the first k levels per frame (default ``L1``); id = ``level * K + code``.
    """

    bwav_kind = "rvq"
    is_rvq = True


@contextlib.contextmanager
def _full_fp32_convolutions(device: torch.device):
    """On CUDA, cuDNN convolutions in full fp32 for this call: its default TF32 (10-bit mantissa) would
    give other latents, and so other tokens, than the CPU. The caller's setting is restored afterwards."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    before = cudnn.allow_tf32
    cudnn.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32 = before


def _batches(items: list, size: int) -> list[list]:
    """``items`` in batches of ``size``; a last batch of one joins the one before (see ``_latent_vectors``)."""
    batches = [items[i:i + size] for i in range(0, len(items), size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = batches[-1] + last
    return batches
