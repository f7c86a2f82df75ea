"""Every Python block of README.md runs when pasted, in order, from the repository root (a fake Hub takes the
push). A block that cannot run here is preceded by ``<!-- readme-test: skip (why) -->``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- readme-test: skip \((?P<why>[^)]*)\) -->\n)?```python\n(?P<code>.*?)```", re.S)


def readme_blocks() -> list[tuple[str, str | None]]:
    return [(m["code"], m["why"]) for m in BLOCK.finditer((ROOT / "README.md").read_text(encoding="utf-8"))]


class FakeHubApi:
    """Stands in for huggingface_hub.HfApi: records what a push would upload."""

    pushes: list = []

    def __init__(self, *args, **kwargs):
        pass

    def create_repo(self, repo_id, **kwargs):
        return repo_id

    def upload_folder(self, repo_id, folder_path, **kwargs):
        FakeHubApi.pushes.append((repo_id, sorted(os.listdir(folder_path)), kwargs))
        return f"https://huggingface.co/{repo_id}/commit/0"


@pytest.mark.slow
def test_every_readme_python_block_runs_in_order(tmp_path, monkeypatch):
    import huggingface_hub

    blocks = readme_blocks()
    assert len(blocks) >= 5
    skipped = [why for _, why in blocks if why]
    assert all(len(why) > 20 for why in skipped), "a skipped block must say why"
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHubApi)
    namespace: dict = {"__name__": "__readme__"}
    for index, (code, why) in enumerate(blocks):
        if why:
            continue
        try:
            exec(compile(code, f"README.md block {index + 1}", "exec"), namespace)
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"README.md python block {index + 1} failed: {type(exc).__name__}: {exc}\n{code}") \
                from exc
    assert FakeHubApi.pushes and FakeHubApi.pushes[-1][0] == "org/name" and FakeHubApi.pushes[-1][2]["create_pr"]
    assert (tmp_path / "sample.jsonl.gz").exists() and (tmp_path / "out" / "tokenizer_config.json").exists()


def test_the_block_finder_sees_every_python_block():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme_blocks()) == text.count("```python")
