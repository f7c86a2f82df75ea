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

#: Suffixes of the earlier tool's files, as accepted for a local file.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
CENTROID_SUFFIXES = (".npy", ".npz")
#: Suffixes looked for in a folder or repo; ``.bin`` only with ``filename=`` (transformers' weights use it).
_DISCOVERED = {"neural": (".pth", ".pt", ".ckpt"), "kmeans": CENTROID_SUFFIXES,
               "any": (".pth", ".pt", ".ckpt") + CENTROID_SUFFIXES}
_ACCEPTED = {"neural": CHECKPOINT_SUFFIXES, "kmeans": CENTROID_SUFFIXES, "any": CHECKPOINT_SUFFIXES + CENTROID_SUFFIXES}
#: Files that transformers' Trainer and models write, never the earlier tool's.
_NOT_UPSTREAM = re.compile(r"(^|/)(optimizer|scheduler|scaler|rng_state[^/]*|training_args|pytorch_model[^/]*)\.\w+$")
#: The keyword arguments that say where the file is (taken out before the rest reach the tokenizer).
LOCATION_KWARGS = ("filename", "revision", "subfolder", "cache_dir", "local_files_only", "token")
#: Loading arguments of transformers' ``from_pretrained`` that mean nothing to a converted file.
LOADING_KWARGS = LOCATION_KWARGS + ("force_download", "proxies", "trust_remote_code", "use_fast", "resume_download",
                                    "_from_auto", "_commit_hash")
#: Most candidates named in an error message.
_LISTED = 8


@dataclass(frozen=True)
class UpstreamFile:
    """A local copy of an upstream file and where it came from (for the model card)."""

    path: Path
    source: str


def looks_like_repo_id(name: str) -> bool:
    """Whether ``name`` is a valid Hub repo id (``org/name`` or ``name``), by huggingface_hub's own rules."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def pop_location(kwargs: dict) -> dict:
    """Remove the loading arguments from ``kwargs``; return the location ones (``filename=``, ``revision=``, ...)."""
    location = {key: kwargs[key] for key in LOCATION_KWARGS if key in kwargs}
    for key in LOADING_KWARGS:
        kwargs.pop(key, None)
    return location


def find_upstream_file(name_or_path, kind: str = "any", filename: str | None = None, revision: str | None = None,
                       subfolder: str | None = None, cache_dir=None, local_files_only: bool | None = None,
                       token=None) -> UpstreamFile | None:
    """The upstream file of ``kind`` (``"neural"``, ``"kmeans"`` or ``"any"``) that ``name_or_path`` holds.

    Returns ``None`` when it names a saved nst_hf tokenizer (a ``tokenizer_config.json``), a file, or a
    folder or repo without upstream files (the caller's normal loading then reads or reports it). Raises
    :class:`~nst_hf.errors.CheckpointError` for a name that is no file, folder or Hub repo (offline: none in
    the cache), for several candidates without ``filename=``, for files of another kind only, for a
    ``filename`` that is not there, or when the download fails.
    A local folder is looked at one level deep, never walked whole.
    """
    text = os.fspath(name_or_path)
    subfolder = subfolder.strip("/") if subfolder else None
    folder = Path(text)
    try:
        if folder.is_file():
            return None
        if folder.is_dir():
            return _in_folder(folder / subfolder if subfolder else folder, kind, filename)
    except OSError as exc:
        raise CheckpointError(f"{text}: cannot be read ({exc.strerror or exc})") from exc
    if not looks_like_repo_id(text):
        raise CheckpointError(f"{text}: no such file or folder{_did_you_mean(text)}")
    files, fetch = _list_repo(text, revision, subfolder, cache_dir, local_files_only, token)
    where = f"Hub repo {text}" + (f" (revision {revision})" if revision else "")
    if filename is None and "tokenizer_config.json" in files:
        return None  # a saved nst_hf tokenizer: the normal loading reads it
    nested = sorted({f.rsplit("/", 1)[0] for f in files if f.endswith("/tokenizer_config.json")})
    if filename is None and nested:
        raise CheckpointError(f"{where} holds a saved tokenizer in {', '.join(nested)}/: pass subfolder="
                              f"{nested[0]!r}")
    name = _choose(files, kind, filename, where)
    if name is None:
        return None
    path = fetch(name)
    inside = f"{subfolder}/{name}" if subfolder else name
    sha = _snapshot_sha(path) or revision or "main"
    return UpstreamFile(path, f"{inside} of the Hub repo {text} (revision {sha})")


def _in_folder(base: Path, kind: str, filename: str | None) -> UpstreamFile | None:
    if not base.is_dir():
        return None
    if filename is not None:
        path = (base / filename).resolve()
        if not path.is_file() or os.path.commonpath([base.resolve(), path]) != str(base.resolve()):
            raise CheckpointError(f"{base} has no file {filename!r}")
        _check_kind(kind, filename, str(base))
        return UpstreamFile(base / filename, filename)
    if (base / "tokenizer_config.json").is_file():
        return None
    files = []
    with os.scandir(base) as entries:
        for entry in entries:
            if entry.is_file():
                files.append(entry.name)
            elif entry.is_dir(follow_symlinks=False):  # one level down, as repos are often laid out
                with os.scandir(entry.path) as inner:
                    files += [f"{entry.name}/{e.name}" for e in inner if e.is_file()]
    name = _choose(sorted(files), kind, None, str(base))
    return None if name is None else UpstreamFile(base / name, name)


def _choose(files: list[str], kind: str, filename: str | None, where: str) -> str | None:
    if filename is not None:
        if filename not in files:
            upstream = [f for f in files if f.endswith(_ACCEPTED["any"])]
            raise CheckpointError(f"{where} has no file {filename!r}; its upstream files: {_some(upstream) or 'none'}")
        _check_kind(kind, filename, where)
        return filename
    upstream = [f for f in files if f.endswith(_DISCOVERED["any"]) and not _NOT_UPSTREAM.search(f)]
    candidates = [f for f in upstream if f.endswith(_DISCOVERED[kind])]
    if len(candidates) > 1:
        raise CheckpointError(f"{where} holds several upstream files ({_some(candidates)}): pass filename= "
                              "(CLI: --filename) to choose one")
    if not candidates:
        if upstream:
            raise CheckpointError(_wrong_kind(where, upstream, kind))
        return None
    return candidates[0]


def _check_kind(kind: str, filename: str, where: str) -> None:
    if filename.endswith(_ACCEPTED[kind]):
        return
    if not filename.endswith(_ACCEPTED["any"]):
        raise CheckpointError(f"{filename} in {where} is not an upstream checkpoint (.pth/.pt/.ckpt/.bin) or centroids "
                              "(.npy/.npz) file")
    raise CheckpointError(_wrong_kind(where, [filename], kind))


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _wrong_kind(where: str, found: list[str], kind: str) -> str:
    if kind == "neural":
        return (f"{where} holds K-Means centroids ({_some(found)}), not a VQ/RVQ checkpoint: load it with "
                "NstKMeansTokenizer.from_pretrained or nst_hf.load_tokenizer")
    return (f"{where} holds a VQ/RVQ checkpoint ({_some(found)}), not K-Means centroids: load it with "
            "NstVQTokenizer/NstRVQTokenizer.from_pretrained or nst_hf.load_tokenizer")


def _snapshot_sha(path: Path) -> str | None:
    """The commit a file fetched into the Hub cache belongs to (``.../snapshots/<sha>/...``)."""
    parts = Path(path).parts
    if "snapshots" in parts:
        index = len(parts) - 1 - parts[::-1].index("snapshots")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


def _did_you_mean(name: str) -> str:
    from difflib import get_close_matches

    from nst_hf.pretrained import BUILTIN

    close = get_close_matches(name, list(BUILTIN), n=1, cutoff=0.6)
    return f" (did you mean the built-in {close[0]!r}?)" if close else ""


def _list_repo(repo_id: str, revision, subfolder, cache_dir, local_files_only, token):
    """``(file names under subfolder, fetch(name) -> local path)`` of a Hub repo; a
    :class:`~nst_hf.errors.CheckpointError` that says why when it is neither online nor in the cache."""
    from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    offline = bool(local_files_only) or constants.HF_HUB_OFFLINE
    prefix = f"{subfolder}/" if subfolder else ""
    files, online_error = None, None
    if not offline:
        try:
            files = HfApi(token=token).list_repo_files(repo_id, revision=revision)
        except (OfflineModeIsEnabled, OSError, ValueError, HfHubHTTPError, *_network_errors()) as exc:
            offline, online_error = True, exc  # no network, or no such repo online: the cache may still have it
    if files is None:
        try:
            snapshot = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError) as exc:
            if online_error is None:
                why = "offline (HF_HUB_OFFLINE=1 or local_files_only=True), and it is not in the Hub cache"
            else:
                hint = " (a private or gated repo needs token=)" if isinstance(online_error, HfHubHTTPError) else ""
                why = (f"the Hub answered {type(online_error).__name__}: {str(online_error).splitlines()[0][:200]}"
                       f"{hint}, and it is not in the Hub cache")
            raise CheckpointError(f"{repo_id}: no such file or folder{_did_you_mean(repo_id)}, and no Hub repo of "
                                  f"that name: {why}") from exc
        files = [str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()]  # dangling links skipped
    names = sorted(f[len(prefix):] for f in files if f.startswith(prefix))

    def fetch(name: str) -> Path:
        try:
            return Path(hf_hub_download(repo_id, name, subfolder=subfolder, revision=revision, cache_dir=cache_dir,
                                        local_files_only=offline, token=token))
        except Exception as exc:  # gated, network, cache: one clear error naming the file
            raise CheckpointError(f"could not download {prefix}{name} from the Hub repo {repo_id}: "
                                  f"{type(exc).__name__}: {exc}") from exc

    return names, fetch


def _network_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection errors (huggingface_hub 1.x talks through httpx)."""
    try:
        import httpx
    except ImportError:  # pragma: no cover - an older huggingface_hub on requests (OSError covers it)
        return ()
    return (httpx.HTTPError,)
