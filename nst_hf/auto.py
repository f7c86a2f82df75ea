"""Load any nst_hf tokenizer by name: a saved folder, a Hub repo id, ``"default"``, or an upstream file."""

from __future__ import annotations

from pathlib import Path


def load_tokenizer(name_or_path: str = "default", **kwargs):
    """Return the right tokenizer class for ``name_or_path``.

    Upstream ``.pth``/``.pt`` files become a VQ or RVQ tokenizer (detected from the weights), ``.npy``/``.npz``
    centroids a K-Means tokenizer (pass ``stride=`` / ``trust_pickle=`` as needed); folders, repo ids and
    built-in names go through ``transformers.AutoTokenizer``.
    """
    from transformers import AutoTokenizer

    from nst_hf.pretrained import resolve_builtin
    from nst_hf.tokenizers import NstBaseTokenizer, NstKMeansTokenizer, NstRVQTokenizer, NstVQTokenizer

    path = Path(str(name_or_path))
    if path.is_file():
        if path.suffix in (".npy", ".npz"):
            return NstKMeansTokenizer.from_upstream(path, **kwargs)
        from nst_hf.models.upstream import load_upstream_model

        kwargs = {k: v for k, v in kwargs.items() if k not in ("stride", "dimension", "trust_pickle")}
        model = load_upstream_model(path)
        cls = NstRVQTokenizer if model.config.architecture == "rvq" else NstVQTokenizer
        return cls.from_upstream(path, model=model, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(resolve_builtin(str(name_or_path)), **kwargs)
    if not isinstance(tokenizer, NstBaseTokenizer):
        from nst_hf.errors import CheckpointError

        missing = "" if (path / "tokenizer_config.json").exists() or not path.is_dir() else \
            " (its tokenizer_config.json is missing)"
        raise CheckpointError(f"{name_or_path} holds no nst_hf tokenizer{missing}: transformers found only a "
                              f"{type(tokenizer).__name__}, which cannot tokenize signals; point to a folder written "
                              "by save_pretrained, or restore tokenizer_config.json")
    return tokenizer
