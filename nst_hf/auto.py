"""Load any nst_hf tokenizer by name: a saved folder, a Hub repo id, ``"default"``, or an upstream file."""

from __future__ import annotations

from pathlib import Path


def load_tokenizer(name_or_path: str = "default", **kwargs):
    """Return the right tokenizer class for ``name_or_path``.

    Upstream ``.pth``/``.pt`` files become a VQ or RVQ tokenizer (detected from the weights), ``.npy``/``.npz``
    centroids a K-Means tokenizer (pass ``stride=`` / ``trust_pickle=`` as needed), whether the file is local
    or the one upstream file of a folder or Hub repo (``filename=`` picks one of several; ``revision=``,
    ``subfolder=``, ``cache_dir=``, ``local_files_only=``, ``token=`` as for any Hub download;
    ``sampling_rate=`` records a converted file's rate). Saved folders, repo ids and built-in names go
    through ``transformers.AutoTokenizer``.
    """
    from transformers import AutoTokenizer

    from nst_hf.models.upstream_source import find_upstream_file, pop_location
    from nst_hf.pretrained import resolve_builtin
    from nst_hf.tokenizers import NstBaseTokenizer

    path = Path(str(name_or_path))
    if path.is_file():
        pop_location(kwargs)
        return from_upstream_file(path, None, kwargs)
    location = pop_location(kwargs)
    found = find_upstream_file(resolve_builtin(str(name_or_path)), "any", **location)
    if found is not None:
        return from_upstream_file(found.path, found.source, kwargs)
    location.pop("filename", None)
    folder = path / location["subfolder"] if location.get("subfolder") else path
    if folder.is_dir() and not (folder / "tokenizer_config.json").exists():
        from nst_hf.errors import CheckpointError

        raise CheckpointError(f"{folder} holds no nst_hf tokenizer (its tokenizer_config.json is missing) and no "
                              "upstream checkpoint or centroids; point to a folder written by save_pretrained, or "
                              "restore tokenizer_config.json")
    name = cached_snapshot(str(name_or_path), location) or resolve_builtin(str(name_or_path))
    if name != str(name_or_path):
        location = {k: v for k, v in location.items() if k == "subfolder"}
    kwargs.update(location)
    tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    if not isinstance(tokenizer, NstBaseTokenizer):
        from nst_hf.errors import CheckpointError

        missing = "" if (path / "tokenizer_config.json").exists() or not path.is_dir() else \
            " (its tokenizer_config.json is missing)"
        raise CheckpointError(f"{name_or_path} holds no nst_hf tokenizer{missing}: transformers found only a "
                              f"{type(tokenizer).__name__}, which cannot tokenize signals; point to a folder written "
                              "by save_pretrained, or restore tokenizer_config.json")
    return tokenizer


def from_upstream_file(path: Path, source: str | None, kwargs: dict):
    """A tokenizer of the kind the upstream file ``path`` holds (centroids, or a VQ/RVQ checkpoint by its
    weights); ``source`` names where it came from for the model card."""
    from nst_hf.models.upstream import load_upstream_model
    from nst_hf.models.upstream_source import CENTROID_SUFFIXES
    from nst_hf.tokenizers import NstKMeansTokenizer, NstRVQTokenizer, NstVQTokenizer

    if path.suffix in CENTROID_SUFFIXES:
        return NstKMeansTokenizer.from_upstream(path, source=source, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("stride", "dimension", "trust_pickle")}
    model = load_upstream_model(path)
    cls = NstRVQTokenizer if model.config.architecture == "rvq" else NstVQTokenizer
    return cls.from_upstream(path, model=model, source=source, **kwargs)


def cached_snapshot(name: str, location: dict) -> str | None:
    """Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``), the cached snapshot folder of the repo id
    ``name``, found as ``hf download`` leaves it (``refs/<revision>`` → ``snapshots/<sha>``); else ``None``.

    ``AutoTokenizer`` alone cannot load such a cache for a repo without ``config.json`` (it has no record that
    the file is absent), while the snapshot folder loads like any folder.
    """
    from huggingface_hub import constants, snapshot_download

    from nst_hf.models.upstream_source import looks_like_repo_id

    if Path(name).exists() or not looks_like_repo_id(name):
        return None
    if not (location.get("local_files_only") or constants.HF_HUB_OFFLINE):
        return None
    try:
        return snapshot_download(name, revision=location.get("revision"), cache_dir=location.get("cache_dir"),
                                 local_files_only=True)
    except Exception:  # not cached: transformers' own error says so
        return None
