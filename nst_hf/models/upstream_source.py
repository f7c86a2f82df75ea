"""Find the earlier tool's checkpoint or centroids file in a folder or a Hugging Face Hub repo that holds
no saved nst_hf tokenizer, so that ``from_pretrained("org/name")`` converts it as a local file would be.

The repo is listed (its cached snapshot when offline), the one upstream file is fetched through
``huggingface_hub`` with the caller's ``revision``/``token``/``cache_dir``, and nothing else is
downloaded. The file is then read exactly like a local one: no code execution, pickled centroids only
with ``trust_pickle=True``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from nst_hf.errors import CheckpointError

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
CENTROID_SUFFIXES = (".npy", ".npz")
#: What each kind of caller can convert.
KINDS = {"neural": CHECKPOINT_SUFFIXES, "kmeans": CENTROID_SUFFIXES, "any": CHECKPOINT_SUFFIXES + CENTROID_SUFFIXES}
#: The keyword arguments that say where the file is (taken out before the rest reach the tokenizer).
LOCATION_KWARGS = ("filename", "revision", "subfolder", "cache_dir", "local_files_only", "token")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


@dataclass(frozen=True)
class UpstreamFile:
    """A local copy of an upstream file and where it came from (for the model card)."""

    path: Path
    source: str

    @property
    def is_centroids(self) -> bool:
        return self.path.suffix in CENTROID_SUFFIXES


def looks_like_repo_id(name: str) -> bool:
    """Whether ``name`` has the shape of a Hub repo id (``org/name`` or ``name``)."""
    return bool(_REPO_ID.match(name))


def pop_location(kwargs: dict) -> dict:
    """Remove and return the location arguments of ``kwargs`` (``filename=``, ``revision=``, ...)."""
    return {key: kwargs.pop(key) for key in LOCATION_KWARGS if key in kwargs}


def find_upstream_file(name_or_path, kind: str = "any", filename: str | None = None, revision: str | None = None,
                       subfolder: str | None = None, cache_dir=None, local_files_only: bool | None = None,
                       token=None) -> UpstreamFile | None:
    """The upstream file of ``kind`` (``"neural"``, ``"kmeans"`` or ``"any"``) that ``name_or_path`` holds.

    Returns ``None`` when it names a saved nst_hf tokenizer (a ``tokenizer_config.json``), a file, or
    something that is neither a folder nor a reachable repo (the caller's normal loading then reports
    it). Raises :class:`~nst_hf.errors.CheckpointError` for several candidates without ``filename=``,
    for files of another kind only, or for a ``filename`` that is not there.
    """
    text = os.fspath(name_or_path)
    folder = Path(text)
    if folder.is_file():
        return None
    if folder.is_dir():
        base = folder / subfolder if subfolder else folder
        files = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        where = text

        def fetch(name: str) -> Path:
            return base / name

        def describe(name: str) -> str:
            return str(base / name)
    elif _REPO_ID.match(text):
        listed = _list_repo(text, revision, subfolder, cache_dir, local_files_only, token)
        if listed is None:
            return None
        files, fetch = listed
        where = f"Hub repo {text}" + (f" (revision {revision})" if revision else "")

        def describe(name: str) -> str:
            inside = f"{subfolder.strip('/')}/{name}" if subfolder else name
            return f"{inside} of the Hub repo {text} (revision {revision or 'main'})"
    else:
        return None
    if "tokenizer_config.json" in files and filename is None:
        return None  # a saved nst_hf tokenizer: the normal loading reads it
    name = _choose(files, kind, filename, where)
    if name is None:
        return None
    return UpstreamFile(Path(fetch(name)), describe(name))


def _choose(files: list[str], kind: str, filename: str | None, where: str) -> str | None:
    wanted = KINDS[kind]
    upstream = [f for f in files if f.endswith(KINDS["any"])]
    if filename is not None:
        if filename not in files:
            raise CheckpointError(f"{where} has no file {filename!r}; its upstream files: {upstream or 'none'}")
        if not filename.endswith(wanted):
            raise CheckpointError(_wrong_kind(where, [filename], kind))
        return filename
    candidates = [f for f in upstream if f.endswith(wanted)]
    if len(candidates) > 1:
        raise CheckpointError(f"{where} holds several upstream files ({', '.join(candidates)}): pass filename= "
                              "(CLI: --filename) to choose one")
    if not candidates:
        if upstream:
            raise CheckpointError(_wrong_kind(where, upstream, kind))
        return None
    return candidates[0]


def _wrong_kind(where: str, found: list[str], kind: str) -> str:
    if kind == "neural":
        return (f"{where} holds K-Means centroids ({', '.join(found)}), not a VQ/RVQ checkpoint: load it with "
                "NstKMeansTokenizer.from_pretrained or nst_hf.load_tokenizer")
    return (f"{where} holds a VQ/RVQ checkpoint ({', '.join(found)}), not K-Means centroids: load it with "
            "NstVQTokenizer/NstRVQTokenizer.from_pretrained or nst_hf.load_tokenizer")


def _list_repo(repo_id: str, revision, subfolder, cache_dir, local_files_only, token):
    """``(file names under subfolder, fetch(name) -> local path)`` of a Hub repo, or ``None`` if it cannot be
    found (neither online nor in the cache)."""
    from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    offline = bool(local_files_only) or constants.HF_HUB_OFFLINE
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    files = None
    if not offline:
        try:
            files = HfApi(token=token).list_repo_files(repo_id, revision=revision)
        except (OfflineModeIsEnabled, OSError, HfHubHTTPError, *_network_errors()):  # no network, or no such repo
            offline = True
    if files is None:
        try:
            snapshot = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            return None
        files = [str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file() or p.is_symlink()]
    names = sorted(f[len(prefix):] for f in files if f.startswith(prefix))

    def fetch(name: str) -> str:
        return hf_hub_download(repo_id, name, subfolder=subfolder, revision=revision, cache_dir=cache_dir,
                               local_files_only=offline, token=token)

    return names, fetch


def _network_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection errors (huggingface_hub 1.x talks through httpx)."""
    try:
        import httpx
    except ImportError:  # pragma: no cover - an older huggingface_hub on requests (OSError covers it)
        return ()
    return (httpx.HTTPError,)
