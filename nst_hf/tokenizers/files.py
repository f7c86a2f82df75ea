"""Checks on the files of a saved tokenizer folder before anything is read from them."""

from __future__ import annotations

import os

from nst_hf.errors import CheckpointError


def _root(folder: str) -> str:
    """The folder files may resolve into: the folder itself, or for a folder inside a Hub cache snapshot
    (``models--org--name/snapshots/<sha>/[subfolder/]``) the whole repository cache, whose ``blobs/`` hold
    the files."""
    current = os.path.abspath(folder)
    while True:
        parent = os.path.dirname(current)
        if parent == current:
            return folder
        if os.path.basename(parent) == "snapshots" and os.path.isdir(os.path.join(os.path.dirname(parent), "blobs")):
            return os.path.dirname(parent)
        current = parent


def require_inside_folder(*paths: str | None) -> None:
    """Raise :class:`CheckpointError` when a tokenizer file is a symlink that leads out of its folder."""
    for path in paths:
        if not path:
            continue
        folder = os.path.realpath(_root(os.path.dirname(os.path.abspath(path))))
        target = os.path.realpath(path)
        if os.path.commonpath([folder, target]) != folder:
            raise CheckpointError(f"{path} is a link to {target}, outside the tokenizer folder {folder}; "
                                  "refusing to read it (copy the file into the folder if you trust it)")
