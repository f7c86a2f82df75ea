"""Training of the codebooks: library functions taking a config; the CLI sits on top."""

from nst_hf.training.kmeans import KMeansTrainingConfig, train_kmeans
from nst_hf.training.vq import VQTrainingConfig, train_vq

__all__ = ["KMeansTrainingConfig", "train_kmeans", "VQTrainingConfig", "train_vq"]
