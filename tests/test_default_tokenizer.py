"""The embedded default tokenizer: loads offline by name, is documented, and runs the README's first command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nst_hf
from nst_hf.output import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "nst_hf" / "pretrained" / "default"


def test_default_loads_offline_by_name(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = nst_hf.NstVQTokenizer.from_pretrained("default")
    assert tok.model.config.architecture == "vq_cnn1" and tok.codebook_size == 1024 and tok.sampling_rate == 5000
    assert type(nst_hf.load_tokenizer("default")) is nst_hf.NstVQTokenizer
    size = sum(p.stat().st_size for p in DEFAULT.iterdir())
    assert size < 3 * 2**20  # "a few MB at most"


def test_default_card_states_command_data_and_held_out_figures():
    card = (DEFAULT / "README.md").read_text()
    info = json.loads((DEFAULT / "bwav_training.json").read_text())
    assert info["command"].startswith("nst-hf train vq ") and "--cnn-type 1" in info["command"]
    assert "read5" not in info["command"] and "not the GPL read5/ files" in card
    from nst_hf.tokenizers.hub_files import _portable

    assert _portable(info["command"]) in card and "Held out: 19 reads" in card  # the record, without local paths
    assert "../shared" not in card and "THIS_REPO" not in card and "pipeline_tag" not in card
    held_out = info["held_out_evaluation"]
    assert held_out["reads"] == 19 and held_out["reconstruction"]["snr_db"] > 10
    assert f"| reconstruction SNR | {held_out['reconstruction']['snr_db']:.2f} dB |" in card
    assert not (DEFAULT / "training_checkpoint.pt").exists()


def test_default_on_shared_reads_matches_card(real_dir):
    """Re-measure a slice of the held-out figure: the shipped weights are the ones the card describes."""
    from nst_hf.evaluate import evaluate_tokenizer

    tok = nst_hf.NstVQTokenizer.from_pretrained("default")
    report = evaluate_tokenizer(tok, [real_dir / "test_datasets/pod5/PAM14583_ee1ba89e_88.pod5"], max_reads=3,
                                resample=True)
    assert report["reconstruction"]["snr_db"] > 15 and report["levels"]["L1"]["usage"] > 0.5


@pytest.mark.slow
def test_readme_first_command_runs_offline(tmp_path):
    readme = (ROOT / "README.md").read_text()
    first = next(line for line in readme.splitlines() if line.startswith("pip install torch==2.13.0"))
    main_job = first.split("&& ", 2)[2]  # the part after the two installs
    assert main_job.startswith("nst-hf tokenize examples/data/sample.pod5 -o ")
    output = main_job.split(" -o ", 1)[1].split()[0]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    result = subprocess.run([sys.executable, "-m", "nst_hf", *main_job.split()[1:]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / output)
    assert len(rows) == 8 and all(row["text"].startswith("<|bwav:") for row in rows)
    assert "8 reads tokenized" in result.stdout


@pytest.mark.parametrize("kind", ["vq", "rvq", "kmeans"])
def test_hub_configs_match_what_save_pretrained_writes(kind, tmp_path, request):
    folder = ROOT / "nst_hf" / "hub_configs" / kind
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["bwav_kind"] == kind and config["auto_map"]["AutoTokenizer"][0].startswith("tokenization_nst_hf.")
    request.getfixturevalue(f"tiny_{kind}").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert set(saved) == set(config), set(saved) ^ set(config)
    for key in ("bwav_kind", "tokenizer_class", "auto_map", "backend", "special_tokens_pattern", "bos_token",
                "eos_token", "unk_token", "pad_token"):
        assert saved[key] == config[key], key
    assert sorted(p.name for p in folder.glob("*.json") if p.name != "tokenizer_config.json") == \
        sorted(p.name for p in tmp_path.glob("*config.json") if p.name != "tokenizer_config.json")
    assert (folder / "model_card.md").read_text().startswith("---\n{{ card_data }}\n---")
    preprocessing = nst_hf.PreprocessingConfig.load(folder / "bwav_preprocessor_config.json")
    assert preprocessing.kmeans_chain == (kind == "kmeans")
