"""Tokenizers shipped inside the package, loadable offline by name (e.g. ``"default"``)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Built-in name → folder inside the package.
BUILTIN = {"default": HERE / "default"}


def resolve_builtin(name_or_path):
    """Map a built-in name to its packaged folder; anything else is returned unchanged."""
    if isinstance(name_or_path, str) and name_or_path in BUILTIN and not Path(name_or_path).exists():
        folder = BUILTIN[name_or_path]
        if not (folder / "tokenizer_config.json").exists():
            from nst_hf.errors import CheckpointError

            raise CheckpointError(f"the built-in tokenizer {name_or_path!r} is not in this installation ({folder})")
        return str(folder)
    return name_or_path
