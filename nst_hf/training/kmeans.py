"""K-Means tokenizer training: windows of the K-Means-chain signal, reservoir-sampled, clustered by faiss."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from nst_hf.errors import NstHfError
from nst_hf.io import open_reads
from nst_hf.preprocessing import PreprocessingConfig, kmeans_chain

logger = logging.getLogger(__name__)

#: faiss cannot cluster more than 2^31 vectors at once.
FAISS_MAX_VECTORS = 2**31 - 1


@dataclass
class KMeansTrainingConfig:
    """A K-Means training run: ``num_codes`` centroids of ``window`` samples, tokens every ``stride`` samples."""

    inputs: list[str] = field(default_factory=list)
    output_dir: str = "nst_kmeans_tokenizer"
    num_codes: int = 8192
    window: int = 32
    stride: int = 8
    max_windows: int = 2_000_000
    iterations: int = 20
    sampling_rate: float | None = None
    seed: int = 0
    gpu: bool = False
    command: str | None = None

    def __post_init__(self):
        if self.num_codes < 2 or self.window < 1 or self.stride < 1:
            raise ValueError("num_codes must be >= 2 and window, stride >= 1")
        if not 0 < self.max_windows <= FAISS_MAX_VECTORS:
            raise ValueError(f"max_windows must be between 1 and {FAISS_MAX_VECTORS} (faiss's limit)")


class WindowReservoir:
    """Uniform sample of at most ``capacity`` windows from a stream of any length (Algorithm R, vectorised)."""

    def __init__(self, capacity: int, width: int, seed: int = 0):
        self.buffer = np.empty((capacity, width), dtype=np.float32)
        self.capacity, self.seen, self.rng = capacity, 0, np.random.default_rng(seed)

    def add(self, windows: np.ndarray) -> None:
        n = len(windows)
        free = max(0, min(self.capacity - self.seen, n))
        if free:
            self.buffer[self.seen:self.seen + free] = windows[:free]
        rest = windows[free:]
        if len(rest):
            positions = self.seen + free + np.arange(len(rest))  # 0-based index of each window in the stream
            slots = self.rng.integers(0, positions + 1)
            keep = slots < self.capacity
            self.buffer[slots[keep]] = rest[keep]  # later windows overwrite earlier ones, as in the sequential form
        self.seen += n

    @property
    def sample(self) -> np.ndarray:
        return self.buffer[:min(self.seen, self.capacity)]


def train_kmeans(config: KMeansTrainingConfig, progress: bool | None = None):
    """Train centroids with faiss K-Means and save an :class:`~nst_hf.NstKMeansTokenizer` folder."""
    import faiss
    from tqdm.auto import tqdm

    from nst_hf.tokenizers import NstKMeansTokenizer

    reservoir = WindowReservoir(config.max_windows, config.window, config.seed)
    reads = skipped = 0
    with open_reads(config.inputs, on_error="skip") as source:
        for record in tqdm(source, desc="sampling windows", unit=" reads",
                           disable=None if progress is None else not progress):
            try:
                signal = kmeans_chain(record.signal_pa)
            except (NstHfError, ValueError) as exc:
                logger.warning("K-Means training: skipping read %s: %s", record.read_id, exc)
                skipped += 1
                continue
            if signal.size < config.window:
                continue
            reservoir.add(np.lib.stride_tricks.sliding_window_view(signal, config.window)[::config.stride])
            reads += 1
        skipped += len(source.skipped)
    sample = np.ascontiguousarray(reservoir.sample)
    if len(sample) < config.num_codes:
        raise ValueError(f"only {len(sample)} windows for {config.num_codes} centroids; add reads or lower --num-codes")
    logger.info("clustering %d of %d windows from %d reads", len(sample), reservoir.seen, reads)
    kmeans = faiss.Kmeans(config.window, config.num_codes, niter=config.iterations, seed=config.seed,
                          gpu=config.gpu, max_points_per_centroid=max(256, len(sample) // config.num_codes + 1),
                          verbose=False)
    kmeans.train(sample)
    info = {"description": (f"faiss K-Means ({config.iterations} iterations) on {len(sample):,} windows sampled "
                            f"uniformly from {reservoir.seen:,} windows of {reads} reads."),
            "command": config.command or "n/a (library call)", "config": asdict(config), "windows_used": int(len(sample)), "windows_seen": int(reservoir.seen),
            "reads": reads, "skipped_reads": skipped, "objective": float(kmeans.obj[-1])}
    tokenizer = NstKMeansTokenizer(centroids=kmeans.centroids, dimension=config.window, stride=config.stride,
                                   preprocessing=PreprocessingConfig(kmeans_chain=True, sampling_rate=config.sampling_rate),
                                   training_info=info)
    tokenizer.save_pretrained(config.output_dir)
    return tokenizer
