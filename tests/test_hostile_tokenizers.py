"""Hostile or inconsistent tokenizer folders fail with a CheckpointError naming the field, before any
large allocation (each load runs under a 2 GiB address-space limit)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nst_hf


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    nst_hf.load_tokenizer("default").save_pretrained(root / "vq")
    rng = np.random.default_rng(0)
    kmeans = nst_hf.NstKMeansTokenizer(centroids=rng.normal(size=(64, 16)).astype(np.float32), dimension=16, stride=4)
    kmeans.save_pretrained(root / "kmeans")
    return root


def _variant(saved: Path, tmp_path: Path, kind: str, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(saved / kind, folder)
    return folder


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _edit_tensor(path: Path, name: str, edit) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(path)
    tensors[name] = edit(tensors[name])
    save_file(tensors, path)


def _cases(saved: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    cases = {}
    for value in (10**12, 0, -5, "many"):
        folder = _variant(saved, tmp_path, "vq", f"codebook_{value}")
        _edit_json(folder / "bwav_model_config.json", codebook_size=value)
        cases[f"codebook_size={value}"] = (folder, "codebook_size")
    folder = _variant(saved, tmp_path, "vq", "levels")
    _edit_json(folder / "bwav_model_config.json", num_quantizers=10**9)
    cases["num_quantizers=1e9"] = (folder, "num_quantizers")
    folder = _variant(saved, tmp_path, "vq", "mismatch")
    _edit_json(folder / "bwav_model_config.json", codebook_size=2048)
    cases["config disagrees with the weights"] = (folder, "has shape")
    folder = _variant(saved, tmp_path, "vq", "nan")
    _edit_tensor(folder / "bwav_tokenizer.safetensors", "codebooks", lambda t: np.where(t == t.flat[0], np.nan, t))
    cases["NaN in the codebook"] = (folder, "codebooks contains NaN")
    folder = _variant(saved, tmp_path, "vq", "link")
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / "bwav_tokenizer.safetensors", outside)
    (folder / "bwav_tokenizer.safetensors").symlink_to(outside)
    cases["weights link out of the folder"] = (folder, "outside the tokenizer folder")
    folder = _variant(saved, tmp_path, "kmeans", "wide")
    _edit_json(folder / "bwav_kmeans_config.json", dimension=10**6)
    cases["K-Means dimension 1e6"] = (folder, "dimension")
    folder = _variant(saved, tmp_path, "kmeans", "inf")
    _edit_tensor(folder / "bwav_centroids.safetensors", "centroids", lambda t: np.where(t > 1, np.inf, t))
    cases["inf in the centroids"] = (folder, "NaN or infinite")
    folder = _variant(saved, tmp_path, "kmeans", "kshape")
    _edit_json(folder / "bwav_kmeans_config.json", dimension=32)
    cases["centroids disagree with the config"] = (folder, "do not fit dimension 32")
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([[object()] * 4] * 3, dtype=object), allow_pickle=True)
    cases["object-dtype .npy"] = (objects, "pickled object")
    return cases


@pytest.mark.slow
def test_hostile_folders_fail_naming_the_field_under_a_memory_limit(saved, tmp_path):
    cases = _cases(saved, tmp_path)
    code = ("import json, resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
            "import nst_hf\nfrom nst_hf.errors import CheckpointError\n"
            "out = {}\n"
            "for name, path in json.loads(sys.argv[1]).items():\n"
            "    try:\n        nst_hf.load_tokenizer(path, stride=8, trust_pickle=name.endswith('trusted'))\n"
            "        out[name] = 'LOADED'\n"
            "    except CheckpointError as exc:\n        out[name] = 'CheckpointError: ' + str(exc)\n"
            "    except BaseException as exc:\n        out[name] = type(exc).__name__ + ': ' + str(exc)\n"
            "print(json.dumps(out))\n")
    paths = {name: str(path) for name, (path, _) in cases.items()}
    paths["object-dtype .npy, trusted"] = paths["object-dtype .npy"]
    result = subprocess.run([sys.executable, "-c", code, json.dumps(paths)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {name: match for name, (_, match) in cases.items()}
    expected["object-dtype .npy, trusted"] = "not a dict with 'centroids'"
    for name, match in expected.items():
        assert outcomes[name].startswith("CheckpointError") and match in outcomes[name], (name, outcomes[name])


def test_the_unchanged_copies_still_load(saved, tmp_path):
    assert nst_hf.load_tokenizer(str(_variant(saved, tmp_path, "vq", "same"))).fingerprint() == \
        nst_hf.load_tokenizer(str(saved / "vq")).fingerprint()
    nst_hf.load_tokenizer(str(_variant(saved, tmp_path, "kmeans", "same_kmeans")))
