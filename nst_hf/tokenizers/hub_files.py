"""The files a saved tokenizer folder carries besides its own: ``tokenizer.json`` for environments without
nst_hf, the ``trust_remote_code`` shim module, and the model card."""

from __future__ import annotations

import os
from pathlib import Path

from nst_hf._version import __version__
from nst_hf.output import atomic_path, atomic_write_text

SHIM_FILE = "tokenization_nst_hf.py"
HUB_CONFIGS = Path(__file__).resolve().parent.parent / "hub_configs"

_SHIM = '''"""Lets `AutoTokenizer.from_pretrained(repo, trust_remote_code=True)` load this repo without importing
nst_hf first. The classes live in the installed package: `pip install nst-hf`."""
from nst_hf import NstKMeansTokenizer as _NstKMeansTokenizer
from nst_hf import NstRVQTokenizer as _NstRVQTokenizer
from nst_hf import NstVQTokenizer as _NstVQTokenizer


class NstVQTokenizer(_NstVQTokenizer):
    pass


class NstRVQTokenizer(_NstRVQTokenizer):
    pass


class NstKMeansTokenizer(_NstKMeansTokenizer):
    pass
'''


def write_tokenizers_json(tokenizer, save_directory) -> str:
    """A ``tokenizers`` WordLevel ``tokenizer.json`` with identical ids, for users without nst_hf."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    from nst_hf.tokenizers.vocab import TOKEN_PATTERN

    vocab = tokenizer.get_vocab()
    fast = Tokenizer(models.WordLevel(vocab=vocab, unk_token=tokenizer.unk_token))
    fast.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated"),
        # each gap between tokens, trimmed, is one piece (one unk), as in NstBaseTokenizer._tokenize
        pre_tokenizers.Split(Regex(r"\A\s+|\s+\z"), behavior="removed"),
    ])
    fast.decoder = decoders.Fuse()
    fast.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokenizer.all_special_tokens])
    path = os.path.join(save_directory, "tokenizer.json")
    with atomic_path(path) as tmp:
        fast.save(str(tmp))
    return path


def write_remote_code_shim(save_directory) -> str:
    """The flat module named in ``auto_map`` (subclasses of the installed nst_hf classes)."""
    path = os.path.join(save_directory, SHIM_FILE)
    atomic_write_text(path, _SHIM)
    return path


def render_model_card(tokenizer, repo_id: str | None = None, tags: list[str] | None = None) -> str:
    """Model card text (YAML metadata + description) from the template of the tokenizer's kind.

    ``repo_id`` is the name the card's snippet loads (the Hub repo when pushed, else the folder name);
    ``tags`` are added to nst_hf's own. The licence is stated only when the training record knows it.
    """
    from huggingface_hub import ModelCard, ModelCardData

    facts = tokenizer.card_facts()
    template_path = HUB_CONFIGS / facts["kind"] / "model_card.md"
    template = template_path.read_text(encoding="utf-8")
    preprocessing = "\n".join(f"| `{k}` | `{v}` |" for k, v in facts["preprocessing"].items())
    training = getattr(tokenizer, "training_info", None) or {}
    values = {
        "class_name": type(tokenizer).__name__.split(".")[-1],
        "kind": facts["kind"],
        "codebook_size": facts["codebook_size"],
        "num_quantizers": facts["num_quantizers"],
        "vocab_size": len(tokenizer),
        "samples_per_token": facts["samples_per_token"],
        "sampling_rate": f"{facts['sampling_rate']:g} Hz" if facts["sampling_rate"] else "not recorded",
        "frame_rate": f"{facts['frame_rate']:g} tokens/s per level" if facts["frame_rate"] else "n/a",
        "architecture": facts.get("architecture", "n/a"),
        "preprocessing_table": preprocessing,
        "training": training.get("description", "Not recorded (for example converted from an earlier checkpoint)."),
        "training_command": training.get("command", "n/a"),
        "evaluation": training.get("evaluation", "Not evaluated yet: run `nst-hf evaluate` on held-out reads."),
        "nst_hf_version": __version__,
        "repo_id": _builtin_folder(repo_id) or repo_id or "path/to/this/folder",
        "load_line": _load_line(repo_id or "path/to/this/folder"),
    }
    for key in ("training", "training_command", "evaluation"):
        values[key] = _portable(str(values[key]))
    own_tags = ["nanopore", "signal-tokenizer", "bwav", f"nst-{facts['kind']}"]
    # no pipeline_tag: the Hub's widgets cannot run a signal tokenizer
    data = ModelCardData(library_name="nst_hf", license=training.get("license"),
                         tags=own_tags + [t for t in (tags or []) if t not in own_tags])
    card = ModelCard.from_template(data, template_str=template, **values)
    return str(card)


def _builtin_folder(name: str | None) -> str | None:
    from nst_hf.pretrained import BUILTIN

    return f"nst_hf/pretrained/{name}" if name in BUILTIN else None


def _load_line(repo_id: str) -> str:
    from nst_hf.pretrained import BUILTIN

    if repo_id in BUILTIN:  # embedded in the package: no repo to point AutoTokenizer at
        return f'tok = nst_hf.load_tokenizer("{repo_id}")  # embedded in nst_hf'
    return f'tok = AutoTokenizer.from_pretrained("{repo_id}")  # or trust_remote_code=True without importing nst_hf'


def _portable(text: str) -> str:
    """Paths of the machine that trained the tokenizer, cut to their last part (``../data/run/x.pod5`` → ``x.pod5``)."""
    import re

    return re.sub(r"(?<![\w./:])(?:\.\.?/|/)[^\s`'\"]*/([^\s/`'\"]+)", r"\1", text)


def write_model_card(tokenizer, save_directory, repo_id: str | None = None, tags: list[str] | None = None) -> str:
    """Render the model card into ``save_directory/README.md``; return its path."""
    path = os.path.join(save_directory, "README.md")
    atomic_write_text(path, render_model_card(tokenizer, repo_id or os.path.basename(os.path.abspath(save_directory)),
                                              tags))
    return path


def write_marker_config(save_directory) -> str | None:
    """``config.json`` = ``{"model_type": "nst_bwav"}`` unless the folder already has a ``config.json``.

    Offline, ``AutoTokenizer.from_pretrained(repo_id)`` first looks for the repo's ``config.json``; a cache
    written by ``hf download`` has neither that file nor the "not on the Hub" marker an online load leaves,
    so without it the load fails with "couldn't connect".
    """
    path = os.path.join(save_directory, "config.json")
    if os.path.exists(path):
        return None
    atomic_write_text(path, '{\n  "model_type": "nst_bwav"\n}\n')
    return path
