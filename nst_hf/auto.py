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

    import nst_hf
    from nst_hf.pretrained import resolve_builtin

    path = Path(str(name_or_path))
    if path.is_file():
        if path.suffix in (".npy", ".npz"):
            return nst_hf.NstKMeansTokenizer.from_upstream(path, **kwargs)
        from nst_hf.models.upstream import load_upstream_model

        kwargs = {k: v for k, v in kwargs.items() if k not in ("stride", "dimension", "trust_pickle")}
        model = load_upstream_model(path)
        cls = nst_hf.NstRVQTokenizer if model.config.architecture == "rvq" else nst_hf.NstVQTokenizer
        return cls.from_upstream(path, model=model, **kwargs)
    return AutoTokenizer.from_pretrained(resolve_builtin(str(name_or_path)), **kwargs)
