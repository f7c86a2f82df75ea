"""The earlier tool's checkpoints and centroids straight from a Hub repo (an offline cache laid out as
``hf download`` writes it: blobs, relative symlinks in snapshots/, refs/main, no marker files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nst_hf
from nst_hf.errors import CheckpointError

from conftest import SHA, hf_download_cache


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty offline Hub cache that huggingface_hub uses by default (as HF_HUB_OFFLINE=1 HF_HUB_CACHE=...)."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def rvq_net_keys(tmp_path_factory, checkpoints) -> Path:
    """The RVQ fixture re-saved with the other key style of the earlier tool (``encoder.net.<i>.*``)."""
    state = torch.load(checkpoints / "rvq_nq4_cb1024.pth", map_location="cpu", weights_only=True)
    assert any(k.startswith("encoder.0.") for k in state)
    renamed = {("encoder.net." + k[len("encoder."):] if k.startswith("encoder.") else k): v for k, v in state.items()}
    path = tmp_path_factory.mktemp("rvq") / "nanopore_rvq_tokenizer_chunk12k.pth"
    torch.save(renamed, path)
    return path


def _signal(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.repeat(rng.normal(90, 12, 400), 30).astype(np.float32) + rng.normal(0, 2, 12000).astype(np.float32)


CASES = [  # (repo file name, fixture, class, load kwargs)
    ("vq_cnn0_cb1024.pth", "vq0", nst_hf.NstVQTokenizer, {}),
    ("vq_cnn1_cb8192.pth", "vq1", nst_hf.NstVQTokenizer, {}),
    ("vq_cnn2_cb1024.pth", "vq2", nst_hf.NstVQTokenizer, {}),
    ("rvq_nq4_cb1024.pth", "rvq", nst_hf.NstRVQTokenizer, {}),
    ("nanopore_rvq_tokenizer_chunk12k.pth", "rvq_net", nst_hf.NstRVQTokenizer, {}),
    ("centroids.npy", "centroids", nst_hf.NstKMeansTokenizer, {"stride": 8}),
    ("centroids_with_meta.npy", "centroids_meta", nst_hf.NstKMeansTokenizer, {"trust_pickle": True}),
]


@pytest.fixture
def sources(checkpoints, upstream_dir, rvq_net_keys) -> dict[str, Path]:
    return {"vq0": checkpoints / "vq_cnn0_cb1024.pth", "vq1": checkpoints / "vq_cnn1_cb8192.pth",
            "vq2": checkpoints / "vq_cnn2_cb1024.pth", "rvq": checkpoints / "rvq_nq4_cb1024.pth",
            "rvq_net": rvq_net_keys, "centroids": upstream_dir / "centroids.npy",
            "centroids_meta": upstream_dir / "centroids_with_meta.npy"}


@pytest.mark.parametrize("name, key, cls, kwargs", CASES, ids=[c[1] for c in CASES])
def test_every_upstream_kind_loads_from_a_repo_id_with_the_local_files_tokens(offline_hub, sources, name, key, cls,
                                                                               kwargs):
    hf_download_cache(offline_hub, f"someone/{key}", {name: sources[key], "README.md": sources[key]})
    local = cls.from_pretrained(sources[key], **kwargs)
    by_class = cls.from_pretrained(f"someone/{key}", **kwargs)
    by_name = nst_hf.load_tokenizer(f"someone/{key}", **kwargs)
    assert type(by_name) is cls
    signal = _signal()
    token_type = "L4" if cls is nst_hf.NstRVQTokenizer else None
    expected = local.signal_to_text(signal, token_type=token_type)
    assert expected
    for tok in (by_class, by_name):
        assert tok.fingerprint() == local.fingerprint()
        assert tok.signal_to_text(signal, token_type=token_type) == expected


def test_an_explicit_cache_and_revision_work_without_the_offline_switch(tmp_path, sources):
    cache = tmp_path / "elsewhere"
    hf_download_cache(cache, "someone/rvq", {"rvq_nq4_cb1024.pth": sources["rvq"]})
    tok = nst_hf.NstRVQTokenizer.from_pretrained("someone/rvq", cache_dir=cache, local_files_only=True, revision=SHA)
    assert tok.fingerprint() == nst_hf.NstRVQTokenizer.from_pretrained(sources["rvq"]).fingerprint()


def test_subfolder_and_several_candidates(offline_hub, sources):
    hf_download_cache(offline_hub, "someone/zoo", {"vq/a.pth": sources["vq0"], "vq/b.pth": sources["vq2"],
                                                   "km/centroids.npy": sources["centroids"]})
    with pytest.raises(CheckpointError, match=r"several upstream files \(vq/a.pth, vq/b.pth\).*filename="):
        nst_hf.NstVQTokenizer.from_pretrained("someone/zoo")
    picked = nst_hf.NstVQTokenizer.from_pretrained("someone/zoo", filename="vq/b.pth")
    assert picked.fingerprint() == nst_hf.NstVQTokenizer.from_pretrained(sources["vq2"]).fingerprint()
    in_sub = nst_hf.NstVQTokenizer.from_pretrained("someone/zoo", subfolder="vq", filename="a.pth")
    assert in_sub.fingerprint() == nst_hf.NstVQTokenizer.from_pretrained(sources["vq0"]).fingerprint()
    kmeans = nst_hf.NstKMeansTokenizer.from_pretrained("someone/zoo", stride=8)  # the only centroids file
    assert kmeans.fingerprint() == nst_hf.NstKMeansTokenizer.from_pretrained(sources["centroids"], stride=8).fingerprint()
    with pytest.raises(CheckpointError, match="several upstream files"):
        nst_hf.load_tokenizer("someone/zoo")
    with pytest.raises(CheckpointError, match="no file 'vq/c.pth'.*vq/a.pth"):
        nst_hf.load_tokenizer("someone/zoo", filename="vq/c.pth")


def test_a_file_of_the_wrong_kind_is_named_with_the_class_to_use(offline_hub, sources):
    hf_download_cache(offline_hub, "someone/centroids", {"centroids.npy": sources["centroids"]})
    hf_download_cache(offline_hub, "someone/vq", {"vq_cnn0_cb1024.pth": sources["vq0"]})
    with pytest.raises(CheckpointError, match="holds K-Means centroids.*NstKMeansTokenizer"):
        nst_hf.NstVQTokenizer.from_pretrained("someone/centroids")
    with pytest.raises(CheckpointError, match="holds a VQ/RVQ checkpoint.*NstVQTokenizer"):
        nst_hf.NstKMeansTokenizer.from_pretrained("someone/vq", stride=8)
    with pytest.raises(CheckpointError) as local:
        nst_hf.NstRVQTokenizer.from_pretrained(sources["vq0"])
    with pytest.raises(CheckpointError) as hub:
        nst_hf.NstRVQTokenizer.from_pretrained("someone/vq")
    assert str(hub.value) == str(local.value) and "NstVQTokenizer" in str(hub.value)  # as for the local file


def test_a_hub_file_is_trusted_no_more_than_a_local_one(offline_hub, sources):
    hf_download_cache(offline_hub, "someone/meta", {"centroids_with_meta.npy": sources["centroids_meta"]})
    with pytest.raises(CheckpointError, match="pickled object .* refused.*trust_pickle=True"):
        nst_hf.load_tokenizer("someone/meta")


def test_sampling_rate_and_the_source_reach_the_model_card(offline_hub, sources, tmp_path):
    hf_download_cache(offline_hub, "someone/rvq", {"rvq_nq4_cb1024.pth": sources["rvq"]})
    tok = nst_hf.load_tokenizer("someone/rvq", sampling_rate=4000)
    assert tok.sampling_rate == 4000
    tok.save_pretrained(tmp_path / "saved")
    card = (tmp_path / "saved" / "README.md").read_text()
    assert f"rvq_nq4_cb1024.pth of the Hub repo someone/rvq (revision {SHA})" in card  # the commit, not "main"
    assert nst_hf.load_tokenizer(tmp_path / "saved").fingerprint() == tok.fingerprint()


def test_a_saved_tokenizer_in_a_repo_still_loads_as_saved(offline_hub, tmp_path, sources):
    """A repo that holds a saved nst_hf tokenizer beside an upstream file loads the saved one."""
    saved = tmp_path / "saved"
    nst_hf.load_tokenizer("default").save_pretrained(saved)
    files = {p.name: p for p in saved.iterdir()} | {"old.pth": sources["vq0"]}
    hf_download_cache(offline_hub, "someone/both", files)
    tok = nst_hf.NstVQTokenizer.from_pretrained("someone/both")
    assert tok.fingerprint() == nst_hf.load_tokenizer("default").fingerprint()


def _cli(*args, cache: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "nst_hf", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
def test_cli_tokenize_and_convert_take_a_repo_id(tmp_path, sources):
    cache = tmp_path / "hub"
    hf_download_cache(cache, "someone/rvq", {"rvq_nq4_cb1024.pth": sources["rvq"]})
    sample = Path(__file__).resolve().parents[1] / "examples" / "data" / "sample.fast5"
    by_repo = _cli("tokenize", sample, "-o", tmp_path / "a.jsonl", "--tokenizer", "someone/rvq", "--token-type", "L2",
                   cache=cache)
    assert by_repo.returncode == 0, by_repo.stderr
    by_file = _cli("tokenize", sample, "-o", tmp_path / "b.jsonl", "--tokenizer", sources["rvq"], "--token-type", "L2",
                   cache=cache)
    assert by_file.returncode == 0, by_file.stderr
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text() != ""
    converted = _cli("convert", "someone/rvq", tmp_path / "out", "--sampling-rate", "4000", cache=cache)
    assert converted.returncode == 0, converted.stderr
    tok = nst_hf.NstRVQTokenizer.from_pretrained(tmp_path / "out")
    assert tok.sampling_rate == 4000
    assert tok.model.state_dict().keys() == nst_hf.NstRVQTokenizer.from_pretrained(sources["rvq"]).model.state_dict().keys()
    missing = _cli("convert", "someone/absent", tmp_path / "out2", cache=cache)
    assert missing.returncode == 1 and "someone/absent: no such file or folder, and no Hub repo" in missing.stderr


def test_online_the_repo_is_listed_and_only_the_one_file_is_fetched(monkeypatch, sources):
    """With a network, the repo listing and the download go through huggingface_hub with the caller's revision
    and token (both stand-ins here: tests never download)."""
    import huggingface_hub
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []

    def list_repo_files(self, repo_id, revision=None, **kwargs):
        calls.append(("list", repo_id, revision, self.token))
        return ["README.md", "weights/rvq_nq4_cb1024.pth"]

    def hf_hub_download(repo_id, filename, subfolder=None, revision=None, local_files_only=False, token=None, **kw):
        calls.append(("download", repo_id, filename, subfolder, revision, token, local_files_only))
        return str(sources["rvq"])

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    tok = nst_hf.load_tokenizer("someone/online", revision="v1", token="hf_x")
    assert calls == [("list", "someone/online", "v1", "hf_x"),
                     ("download", "someone/online", "weights/rvq_nq4_cb1024.pth", None, "v1", "hf_x", False)]
    assert tok.fingerprint() == nst_hf.NstRVQTokenizer.from_pretrained(sources["rvq"]).fingerprint()


def test_loading_arguments_are_never_saved_with_the_tokenizer(offline_hub, sources, tmp_path):
    """A Hub token (or any other loading argument) must not end up in tokenizer_config.json and so on the Hub."""
    hf_download_cache(offline_hub, "someone/rvq", {"rvq_nq4_cb1024.pth": sources["rvq"]})
    secret = {"token": "hf_SECRET", "revision": SHA, "force_download": False, "proxies": {"https": "p"},
              "trust_remote_code": True}
    loaded = [nst_hf.load_tokenizer(sources["vq0"], filename="x.pth", **secret),
              nst_hf.NstVQTokenizer.from_pretrained(sources["vq0"], **secret),
              nst_hf.NstRVQTokenizer.from_pretrained("someone/rvq", **secret),
              nst_hf.load_tokenizer("someone/rvq", **secret),
              nst_hf.NstKMeansTokenizer.from_pretrained(sources["centroids"], stride=8, **secret)]
    for index, tok in enumerate(loaded):
        tok.save_pretrained(tmp_path / str(index))
        config = (tmp_path / str(index) / "tokenizer_config.json").read_text()
        assert "hf_SECRET" not in config and "proxies" not in config and "trust_remote_code" not in config, index


def test_a_local_folder_is_looked_at_one_level_deep(tmp_path, sources):
    folder = tmp_path / "run"
    (folder / "checkpoints" / "deeper").mkdir(parents=True)
    (folder / "checkpoints" / "vq.pth").write_bytes(sources["vq0"].read_bytes())
    (folder / "checkpoints" / "deeper" / "other.pth").write_bytes(sources["vq2"].read_bytes())  # not looked at
    (folder / "training_args.bin").write_bytes(b"not the earlier tool's")  # transformers' Trainer file: ignored
    tok = nst_hf.load_tokenizer(folder)
    assert tok.fingerprint() == nst_hf.NstVQTokenizer.from_pretrained(sources["vq0"]).fingerprint()
    assert "`checkpoints/vq.pth`" in tok.training_info["description"]  # relative, no build-machine path
    sub = nst_hf.NstVQTokenizer.from_pretrained(folder, subfolder="checkpoints/deeper")
    assert sub.fingerprint() == nst_hf.NstVQTokenizer.from_pretrained(sources["vq2"]).fingerprint()
    with pytest.raises(CheckpointError, match="has no file '../x.pth'"):
        nst_hf.load_tokenizer(folder, filename="../x.pth")
    (folder / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="notes.txt .* is not an upstream checkpoint"):
        nst_hf.NstVQTokenizer.from_pretrained(folder, filename="notes.txt")


def test_a_saved_tokenizer_in_a_repo_subfolder_is_pointed_to(offline_hub, sources, tmp_path):
    saved = tmp_path / "saved"
    nst_hf.NstVQTokenizer.from_pretrained(sources["vq0"]).save_pretrained(saved)
    files = {f"tok/{p.name}": p for p in saved.iterdir()} | {"legacy/old.pth": sources["vq2"]}
    hf_download_cache(offline_hub, "someone/nested", files)
    with pytest.raises(CheckpointError, match="saved tokenizer in tok/: pass subfolder='tok'"):
        nst_hf.NstVQTokenizer.from_pretrained("someone/nested")
    tok = nst_hf.NstVQTokenizer.from_pretrained("someone/nested", subfolder="tok")
    assert tok.fingerprint() == nst_hf.NstVQTokenizer.from_pretrained(sources["vq0"]).fingerprint()


def test_names_that_are_no_repo_id_are_not_looked_up(tmp_path):
    from nst_hf.models.upstream_source import looks_like_repo_id

    assert looks_like_repo_id("org/name") and looks_like_repo_id("name.v2")
    for name in ("my--run", "runs/tok.", "a/b.git", "/abs/path", "a/b/c", "", "x" * 200):
        assert not looks_like_repo_id(name), name
