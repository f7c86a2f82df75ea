"""K-Means tokenizer: nearest faiss centroid for windows of ``dimension`` samples every ``stride`` samples."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from nst_hf.errors import CheckpointError
from nst_hf.output import atomic_path, atomic_write_json
from nst_hf.preprocessing import PreprocessingConfig
from nst_hf.models.upstream_source import CENTROID_SUFFIXES, pop_location
from nst_hf.quantizers.nearest import NearestCodeSearch
from nst_hf.tokenizers.base import PREPROCESSOR_FILE, TRAINING_FILE, NstBaseTokenizer

logger = logging.getLogger(__name__)

CENTROIDS_FILE = "bwav_centroids.safetensors"
KMEANS_CONFIG_FILE = "bwav_kmeans_config.json"
#: Wider windows or longer strides, or more centroids, are a damaged config, not a real tokenizer.
MAX_DIMENSION = 4096
MAX_CENTROIDS = 1 << 20


def _check_window(dimension: int, stride: int, where: str) -> None:
    if not 1 <= dimension <= MAX_DIMENSION or not 1 <= stride <= MAX_DIMENSION:
        raise CheckpointError(f"{where}: dimension and stride must be between 1 and {MAX_DIMENSION} samples, "
                              f"got dimension={dimension}, stride={stride}")


def _load_saved_centroids(centroids_file: str, kmeans_config_file: str) -> tuple[np.ndarray, int, int]:
    """Config checked (before the array is read), then the centroid array's shape from the file's header."""
    from safetensors import safe_open

    try:
        with open(kmeans_config_file, encoding="utf-8") as handle:
            meta = json.load(handle)
        dimension, stride = int(meta["dimension"]), int(meta["stride"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{kmeans_config_file}: needs integer 'dimension' and 'stride' ({exc})") from exc
    _check_window(dimension, stride, kmeans_config_file)
    try:
        with safe_open(centroids_file, framework="numpy") as handle:
            if list(handle.keys()) != ["centroids"]:
                raise CheckpointError(f"{centroids_file}: holds {list(handle.keys())[:5]}, not one 'centroids' array")
            shape = tuple(handle.get_slice("centroids").get_shape())
            if len(shape) != 2 or shape[1] != dimension or not 2 <= shape[0] <= MAX_CENTROIDS:
                raise CheckpointError(f"{centroids_file}: centroids of shape {shape} do not fit dimension {dimension} "
                                      f"(and 2 to {MAX_CENTROIDS:,} centroids)")
            centroids = handle.get_tensor("centroids")
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{centroids_file}: not a readable safetensors file ({exc})") from exc
    return centroids, dimension, stride


class NstKMeansTokenizer(NstBaseTokenizer):
    """K-Means tokenizer over the K-Means preprocessing chain; text ``<|bwav:N|>``, id == centroid index."""

    bwav_kind = "kmeans"
    is_rvq = False
    vocab_files_names = {"centroids_file": CENTROIDS_FILE, "kmeans_config_file": KMEANS_CONFIG_FILE,
                         "preprocessor_file": PREPROCESSOR_FILE, "training_file": TRAINING_FILE}

    def __init__(self, centroids_file: str | None = None, kmeans_config_file: str | None = None,
                 preprocessor_file: str | None = None, centroids: np.ndarray | None = None,
                 dimension: int | None = None, stride: int | None = None,
                 preprocessing: PreprocessingConfig | dict | None = None, training_info: dict | None = None,
                 training_file: str | None = None, **kwargs):
        if centroids is None:
            self._require_files(kwargs, centroids_file, kmeans_config_file, preprocessor_file=preprocessor_file,
                                preprocessing=preprocessing)
            centroids, dimension, stride = _load_saved_centroids(centroids_file, kmeans_config_file)
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        if dimension is None or stride is None or centroids.ndim != 2 or centroids.shape[1] != dimension:
            raise CheckpointError(f"centroids of shape {centroids.shape} need a matching dimension and a stride "
                                  f"(got dimension={dimension}, stride={stride})")
        _check_window(dimension, stride, "K-Means")
        if not np.isfinite(centroids).all():
            raise CheckpointError("the centroids contain NaN or infinite values")
        self._check_saved_sizes(kwargs, centroids.shape[0], 1)
        self.centroids = centroids
        self.dimension = int(dimension)
        self.stride = int(stride)
        self.training_info = training_info or self._load_training_info(training_file)
        #: The nearest-centroid search (the fused kernel when built, else a faiss ``IndexFlatL2``).
        self.search = NearestCodeSearch(centroids, fallback="faiss")
        preprocessing = self._load_preprocessing(preprocessor_file, preprocessing, PreprocessingConfig(kmeans_chain=True))
        if not preprocessing.kmeans_chain:
            raise CheckpointError("a K-Means tokenizer needs the K-Means preprocessing chain (kmeans_chain=True)")
        super().__init__(codebook_size=centroids.shape[0], num_quantizers=1, preprocessing=preprocessing, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load a saved folder, a Hub repo id, or the earlier tool's centroids (``.npy``/``.npz``; ``stride=`` if
        unrecorded): a file, or a folder or Hub repo that holds one (``filename=`` picks one of several;
        ``revision=``, ``subfolder=``, ``cache_dir=``, ``local_files_only=`` and ``token=`` as for any Hub
        download)."""
        return cls._load(pretrained_model_name_or_path, "kmeans", CENTROID_SUFFIXES, args, kwargs)

    @classmethod
    def from_upstream(cls, path, dimension: int | None = None, stride: int | None = None, trust_pickle: bool = False,
                      sampling_rate: float | None = None, source: str | None = None, **kwargs):
        """Build from the earlier tool's centroids; ``source`` says where the file came from, for the model card."""
        from nst_hf.models.upstream import load_upstream_centroids

        pop_location(kwargs)  # Hub loading arguments mean nothing here and must not be saved with the tokenizer
        centroids, dimension, stride = load_upstream_centroids(path, dimension, stride, trust_pickle)
        origin = source or Path(path).name
        info = {"description": f"Converted from the earlier nanopore_signal_tokenizer centroids `{origin}`. Its licence is that of the original "
                                "file, which is not recorded here."}
        return cls(centroids=centroids, dimension=dimension, stride=stride, training_info=info,
                   preprocessing=PreprocessingConfig(kmeans_chain=True, sampling_rate=sampling_rate),
                   name_or_path=str(path), **kwargs)

    @property
    def samples_per_token(self) -> int:
        return self.stride

    @property
    def min_samples_for_tokens(self) -> int:
        return self.dimension

    @property
    def token_centre(self) -> int:
        """A token is a window of ``dimension`` samples starting every ``stride``: its centre is ``dimension // 2``
        samples in."""
        return self.dimension // 2

    def flops_per_sample(self, token_type: str | None = None) -> dict[str, float]:
        """The nearest-centroid search (``2·K·D`` per window) per input sample; there is no encoder."""
        return {"encoder": 0.0, "search": 2.0 * self.codebook_size * self.dimension / self.stride}

    def _fingerprint_arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids}

    def _fingerprint_config(self) -> dict:
        return {**super()._fingerprint_config(), "dimension": self.dimension, "stride": self.stride}

    def windows(self, signal: np.ndarray) -> np.ndarray:
        """``[n, dimension]`` full windows every ``stride`` samples (a view; none if shorter than a window)."""
        if signal.size < self.dimension:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.lib.stride_tricks.sliding_window_view(signal, self.dimension)[::self.stride]

    def _encode_preprocessed(self, signals: list[np.ndarray], levels: int) -> list[np.ndarray]:
        blocks = [self.windows(s) for s in signals]
        if not any(len(b) for b in blocks):
            return [np.zeros((0, 1), dtype=np.int64) for _ in signals]
        vectors = np.concatenate(blocks)
        with self._stage("search"):
            codes = self.search(vectors)
        out, offset = [], 0
        for block in blocks:
            out.append(codes[offset:offset + len(block)].reshape(-1, 1))
            offset += len(block)
        return out

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        from safetensors.numpy import save_file

        prefix = f"{filename_prefix}-" if filename_prefix else ""
        path = os.path.join(save_directory, prefix + CENTROIDS_FILE)
        with atomic_path(path) as tmp:
            save_file({"centroids": self.centroids}, str(tmp), metadata={"nst_hf": "kmeans"})
            os.chmod(tmp, 0o644)
        config = os.path.join(save_directory, prefix + KMEANS_CONFIG_FILE)
        atomic_write_json(config, {"model_type": "nst_kmeans", "dimension": self.dimension, "stride": self.stride,
                                   "num_centroids": int(self.centroids.shape[0]), "metric": "squared_l2"})
        if self.training_info:
            self._save_training_info(save_directory, prefix)
        return path, config, self._save_preprocessing(save_directory, prefix)

    def card_facts(self) -> dict:
        facts = super().card_facts()
        facts["architecture"] = f"faiss IndexFlatL2 over {self.centroids.shape[0]} centroids of {self.dimension} samples, stride {self.stride}"
        return facts
