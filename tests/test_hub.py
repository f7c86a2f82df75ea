"""Saving, loading by folder / repo id / AutoTokenizer / remote code, model cards and safe loading."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

import nst_hf
from nst_hf.errors import CheckpointError

KINDS = ["vq1", "rvq", "kmeans"]


@pytest.fixture(scope="module")
def signal(demo_reads):
    return demo_reads[2].signal_pa


def _populate_hub_cache(cache_dir: Path, repo_id: str, src_dir: Path, sha: str = "a" * 40) -> None:
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(src_dir, repo / "snapshots" / sha)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)  # no `.no_exist` marker: a cache as `hf download` leaves it


@pytest.fixture(scope="module")
def saved(request, tmp_path_factory):
    folders = {}
    for name in KINDS:
        tok = request.getfixturevalue(name)
        folder = tmp_path_factory.mktemp(name)
        tok.save_pretrained(folder)
        folders[name] = folder
    return folders


@pytest.mark.parametrize("name", KINDS)
def test_save_load_round_trip(request, saved, name, signal):
    tok = request.getfixturevalue(name)
    folder = saved[name]
    files = sorted(p.name for p in folder.iterdir())
    assert "model.safetensors" not in files and not any(f.endswith((".pth", ".pkl", ".npy")) for f in files)
    assert {"tokenizer_config.json", "tokenizer.json", "bwav_preprocessor_config.json", "README.md",
            "tokenization_nst_hf.py"} <= set(files)
    expected = tok.signal_to_text(signal, token_type="L4" if tok.is_rvq else None)
    for loaded in (type(tok).from_pretrained(folder), AutoTokenizer.from_pretrained(folder)):
        assert type(loaded) is type(tok)
        assert loaded.signal_to_text(signal, token_type="L4" if tok.is_rvq else None) == expected
        assert loaded.preprocessing == tok.preprocessing and len(loaded) == len(tok)


def test_wrong_kind_empty_folder_and_unknown_repo(saved, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="holds a 'kmeans' tokenizer, not a 'vq' one"):
        nst_hf.NstVQTokenizer.from_pretrained(saved["kmeans"])
    with pytest.raises(CheckpointError, match="checkpoint is a rvq model; load it with nst_hf.NstRVQTokenizer"):
        nst_hf.NstVQTokenizer.from_pretrained(saved["rvq"])
    with pytest.raises(CheckpointError, match="nothing to tokenize with"):
        nst_hf.NstVQTokenizer.from_pretrained(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises((CheckpointError, OSError)):
        nst_hf.NstKMeansTokenizer.from_pretrained("nobody/no-such-tokenizer")


@pytest.mark.slow
def test_repo_id_from_offline_cache(saved, tmp_path, signal, vq1):
    cache = tmp_path / "hub"
    _populate_hub_cache(cache, "nst/bwav-vq-test", saved["vq1"])
    expected = vq1.signal_to_text(signal)
    code = ("import sys, json, numpy as np, nst_hf\nfrom transformers import AutoTokenizer\n"
            "x = np.load(sys.argv[1])\n"
            "a = nst_hf.NstVQTokenizer.from_pretrained('nst/bwav-vq-test')\n"
            "b = AutoTokenizer.from_pretrained('nst/bwav-vq-test')\n"
            "print(json.dumps([type(b).__name__, a.signal_to_text(x), b.signal_to_text(x)]))\n")
    np.save(tmp_path / "x.npy", signal)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npy")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    name, a, b = json.loads(result.stdout.strip().splitlines()[-1])
    assert name == "NstVQTokenizer" and a == expected and b == expected


@pytest.mark.slow
def test_remote_code_without_importing_nst_hf(saved, tmp_path, signal, rvq):
    code = ("import sys, json, numpy as np\nfrom transformers import AutoTokenizer\n"
            "assert 'nst_hf' not in sys.modules\n"
            "tok = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
            "print(json.dumps([type(tok).__module__, tok.signal_to_text(np.load(sys.argv[2]), token_type='L2')]))\n")
    np.save(tmp_path / "x.npy", signal)
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code, str(saved["rvq"]), str(tmp_path / "x.npy")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    module, text = json.loads(result.stdout.strip().splitlines()[-1])
    assert "tokenization_nst_hf" in module and text == rvq.signal_to_text(signal, token_type="L2")


def test_tokenizer_json_works_without_nst_hf(saved, tmp_path, signal, kmeans):
    text = kmeans.signal_to_text(signal)
    # auto_map makes AutoTokenizer insist on trust_remote_code; without nst_hf the fast class reads tokenizer.json
    code = ("import sys, json\nsys.modules['nst_hf'] = None\nfrom transformers import PreTrainedTokenizerFast\n"
            "tok = PreTrainedTokenizerFast.from_pretrained(sys.argv[1])\ntext = open(sys.argv[2]).read()\n"
            "ids = tok(text, add_special_tokens=False).input_ids\n"
            "print(json.dumps([isinstance(tok, PreTrainedTokenizerFast), ids, tok.decode(ids), tok('zzz').input_ids,\n"
            "                  tok('x y <|bwav:1|>', padding='max_length').input_ids]))\n")
    (tmp_path / "t.txt").write_text(text)
    result = subprocess.run([sys.executable, "-c", code, str(saved["kmeans"]), str(tmp_path / "t.txt")],
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr
    fast, ids, decoded, junk, padded = json.loads(result.stdout.strip().splitlines()[-1])
    assert fast
    assert padded == [kmeans.unk_token_id, 1]  # one unk per gap, and no 2**31-position padding (aborted in Rust)
    assert ids == kmeans(text).input_ids and decoded == text and junk == [kmeans.unk_token_id]


def test_model_card_and_push_to_hub(saved, vq1, tmp_path):
    from huggingface_hub import ModelCard

    card = ModelCard.load(saved["rvq"] / "README.md")
    assert card.data.library_name == "nst_hf" and "nanopore" in card.data.tags
    assert "| codebook size | 1024 |" in card.text and "| codebooks (levels) | 4 |" in card.text
    assert "stride 12" in card.text and "rvq_nq4_cb1024.pth" in card.text

    class FakeApi:
        def __init__(self):
            self.calls = []

        def create_repo(self, repo_id, **kwargs):
            self.calls.append(("create_repo", repo_id, kwargs.get("private")))

        def upload_folder(self, repo_id, folder_path, **kwargs):
            self.calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path)), kwargs))
            self.card = Path(folder_path, "README.md").read_text()
            return "commit-url"

    api = FakeApi()
    assert vq1.push_to_hub("org/bwav-vq", api=api, create_pr=True, commit_message="m", commit_description="d",
                           revision="dev", private=True, tags=["my-tag"]) == "commit-url"
    assert api.calls[0] == ("create_repo", "org/bwav-vq", True)
    _, repo, uploaded, forwarded = api.calls[1]
    assert {"README.md", "bwav_tokenizer.safetensors", "tokenizer_config.json", "tokenization_nst_hf.py"} <= set(uploaded)
    assert forwarded == {"repo_type": "model", "commit_message": "m", "commit_description": "d", "revision": "dev",
                         "create_pr": True}
    assert "library_name: nst_hf" in api.card and "| codebook size | 8192 |" in api.card
    assert 'from_pretrained("org/bwav-vq")' in api.card and "THIS_REPO" not in api.card and "- my-tag" in api.card
    assert "pipeline_tag" not in api.card
    assert "license:" not in api.card and "licence is that of the original" in api.card  # a converted checkpoint

    pushed = FakeApi()
    vq1.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="org/other", api=pushed, create_pr=True)
    assert (tmp_path / "local" / "README.md").exists()
    assert pushed.calls[1][1] == "org/other" and pushed.calls[1][3]["create_pr"] is True
    with pytest.raises(TypeError, match="unexpected arguments"):
        vq1.push_to_hub("org/x", api=FakeApi(), commit_mesage="typo")


def test_convert_cli(checkpoints, tmp_path, signal, vq1):
    from nst_hf.cli import main

    assert main(["convert", str(checkpoints / "vq_cnn1_cb8192.pth"), str(tmp_path / "vq"), "--sampling-rate", "4000"]) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "vq")
    assert tok.sampling_rate == 4000 and tok.signal_to_text(signal, sampling_rate=4000) == vq1.signal_to_text(signal)


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {_Boom.target}",))


def test_malicious_pickles_never_execute(tmp_path):
    _Boom.target = tmp_path / "pwned"
    bad_npy = tmp_path / "centroids.npy"
    with open(bad_npy, "wb") as handle:
        np.lib.format.write_array(handle, np.array([_Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match="pickled object .* refused.*trust_pickle=True"):
        nst_hf.NstKMeansTokenizer.from_pretrained(bad_npy, stride=8)
    bad_pth = tmp_path / "model.pth"
    torch.save({"model_state_dict": _Boom()}, bad_pth)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        nst_hf.NstVQTokenizer.from_pretrained(bad_pth)
    assert not _Boom.target.exists()


def test_trusted_pickled_centroids_and_npz(upstream_dir, tmp_path, kmeans, signal):
    with pytest.raises(CheckpointError, match="trust_pickle"):
        nst_hf.NstKMeansTokenizer.from_pretrained(upstream_dir / "centroids_with_meta.npy")
    meta = nst_hf.NstKMeansTokenizer.from_pretrained(upstream_dir / "centroids_with_meta.npy", trust_pickle=True)
    np.savez(tmp_path / "c.npz", centroids=kmeans.centroids, dim=32, stride=8)
    npz = nst_hf.NstKMeansTokenizer.from_pretrained(tmp_path / "c.npz")
    assert meta.stride == npz.stride == 8
    assert meta.signal_to_text(signal) == npz.signal_to_text(signal) == kmeans.signal_to_text(signal)
    with pytest.raises(CheckpointError, match="stores no stride"):
        nst_hf.NstKMeansTokenizer.from_pretrained(upstream_dir / "centroids.npy")


def test_tokenizer_pickles_for_worker_processes(kmeans, vq1, signal):
    kmeans.search(kmeans.windows(kmeans.preprocess_signal(signal)))  # built search state must not break pickling
    vq1.signal_to_text(signal)
    for tok in (kmeans, vq1):
        clone = pickle.loads(pickle.dumps(tok))
        assert clone.signal_to_text(signal) == tok.signal_to_text(signal)


@pytest.mark.slow
def test_repo_ids_load_offline_from_a_cache_as_hf_download_writes_it(tmp_path, signal, vq1):
    """No `.no_exist` markers: classes, load_tokenizer, AutoTokenizer (repos saved with config.json) and the CLI."""
    from conftest import hf_download_cache

    new = tmp_path / "new"
    vq1.save_pretrained(new)
    assert json.loads((new / "config.json").read_text()) == {"model_type": "nst_bwav"}
    old = tmp_path / "old"  # as pushed by nst_hf 0.1: no config.json
    vq1.save_pretrained(old)
    (old / "config.json").unlink()
    cache = tmp_path / "hub"
    hf_download_cache(cache, "org/new", {p.name: p for p in new.iterdir()})
    hf_download_cache(cache, "org/old", {p.name: p for p in old.iterdir()})
    assert not list(cache.rglob(".no_exist"))
    np.save(tmp_path / "x.npy", signal)
    code = ("import sys, json, numpy as np, nst_hf\nfrom transformers import AutoTokenizer\n"
            "x = np.load(sys.argv[1])\n"
            "toks = [nst_hf.load_tokenizer('org/old'), nst_hf.NstVQTokenizer.from_pretrained('org/old'),\n"
            "        nst_hf.load_tokenizer('org/new'), AutoTokenizer.from_pretrained('org/new')]\n"
            "print(json.dumps([[type(t).__name__, t.signal_to_text(x)] for t in toks]))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npy")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    expected = vq1.signal_to_text(signal)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [["NstVQTokenizer", expected]] * 4
    inspect = subprocess.run([sys.executable, "-m", "nst_hf", "inspect", "org/old", "--json"], capture_output=True,
                             text=True, env=env, timeout=300)
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["codebook_size"] == vq1.codebook_size
