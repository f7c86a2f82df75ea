"""Nearest-code search shared by the neural and K-Means tokenizers."""
