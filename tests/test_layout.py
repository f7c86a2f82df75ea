"""The package layout the README describes: no module imports one above it, and the light entry points
(``nst-hf -h``, ``nst_hf.io``) stay free of torch and transformers."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nst_hf"

#: Layer of each module prefix, lowest first (the README's "Layout" section, in code).
LAYERS = [
    ("nst_hf._version", 0), ("nst_hf.errors", 0), ("nst_hf._threads", 0), ("nst_hf._allocator", 0),
    ("nst_hf.output", 0), ("nst_hf._autoregister", 0), ("nst_hf._rank_filter", 0),
    ("nst_hf.io", 1), ("nst_hf.preprocessing", 1), ("nst_hf.chunking", 1), ("nst_hf.simulate", 1),
    ("nst_hf.pretrained.default", 6), ("nst_hf.pretrained", 1),
    ("nst_hf.quantizers", 2), ("nst_hf.models", 2),
    ("nst_hf.tokenizers", 3),
    ("nst_hf.pipeline", 4), ("nst_hf.auto", 4), ("nst_hf.lm", 4), ("nst_hf.hf_datasets", 4), ("nst_hf.evaluate", 4),
    ("nst_hf.pairs", 4),
    ("nst_hf.training", 4), ("nst_hf.ray", 4), ("nst_hf.bench", 4), ("nst_hf.fuzzing", 4),
    ("nst_hf.cli", 5), ("nst_hf.__main__", 5),
    ("nst_hf", 6),  # the package root: the public names, resolved lazily
]
#: The one call into a higher layer, at call time: the earlier tool's ``tokenizer.tokenize_fast5`` file job.
ALLOWED_UPWARD = {("nst_hf.tokenizers.compat", "nst_hf.pipeline")}


def layer(module: str) -> int:
    for prefix, rank in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the README's Layout section")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(package: str, name: str) -> bool:
    folder = PACKAGE.parent / package.replace(".", "/")
    return (folder / f"{name}.py").exists() or (folder / name / "__init__.py").exists() \
        or any(folder.glob(f"{name}.*.so")) or (folder / f"{name}.c").exists()


def imported_modules(path: Path) -> set[str]:
    """Every nst_hf module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names if _is_module(node.module, alias.name)}
            found |= submodules
            if len(submodules) < len(node.names):  # some names are attributes of the module itself
                found.add(node.module)
    return {name for name in found if name == "nst_hf" or name.startswith("nst_hf.")}


def test_no_module_imports_one_above_it():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported in imported_modules(path):
            if layer(imported) > layer(importer) and (importer, imported) not in ALLOWED_UPWARD \
                    and not imported.startswith(importer + "."):
                violations.append(f"{importer} (layer {layer(importer)}) imports {imported} (layer {layer(imported)})")
    assert not violations, "\n".join(violations)


def test_the_layout_check_sees_function_level_imports_and_its_exception_is_real():
    """The one allowed upward import exists (a stale exception would hide a new one) and is found inside a function."""
    for importer, imported in ALLOWED_UPWARD:
        path = PACKAGE.parent / (importer.replace(".", "/") + ".py")
        assert imported in imported_modules(path) and layer(imported) > layer(importer)


def _loaded_after(code: str) -> dict:
    script = code + "\nimport json, sys\nprint(json.dumps({m: m in sys.modules for m in ('torch', 'transformers')}))"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONSTARTUP"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code", ["import nst_hf", "import nst_hf.cli", "import nst_hf.io",
                                  "from nst_hf.cli import build_parser; build_parser().format_help()"])
def test_light_imports_load_neither_torch_nor_transformers(code):
    assert _loaded_after(code) == {"torch": False, "transformers": False}


@pytest.mark.slow
@pytest.mark.parametrize("order", ["nst_hf first", "transformers first"])
def test_autotokenizer_finds_the_classes_after_import_nst_hf(order):
    """``import nst_hf`` registers the classes whether transformers was imported before or after it."""
    folder = PACKAGE / "pretrained" / "default"
    imports = "import nst_hf\nfrom transformers import AutoTokenizer" if order == "nst_hf first" else \
        "from transformers import AutoTokenizer\nimport nst_hf"
    script = (f"{imports}\ntok = AutoTokenizer.from_pretrained({str(folder)!r})\n"
              "print(type(tok).__module__ + '.' + type(tok).__name__)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "nst_hf.tokenizers.neural.NstVQTokenizer"
