"""Shared fixtures: paths into ../shared (CI has it beside the clone) and small generated files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL = SHARED / "data" / "real"


def _require(path: Path) -> Path:
    if not path.exists():
        message = f"{path} not found: the shared test data must sit beside the checkout (../shared)"
        if os.environ.get("CI") or os.environ.get("NST_HF_REQUIRE_SHARED") == "1":
            pytest.fail(message + "; CI needs it, so this test fails instead of skipping")
        pytest.skip(message)
    return path


def require_native(module, name: str) -> None:
    """Skip (with the reason) when a compiled extension was not built, e.g. an install without a C compiler;
    fail instead under CI or NST_HF_REQUIRE_NATIVE=1, where the build must have produced it."""
    if module is not None:
        return
    message = f"{name} is not built (nst_hf was installed without a C compiler)"
    if os.environ.get("CI") or os.environ.get("NST_HF_REQUIRE_NATIVE") == "1":
        pytest.fail(message + "; reinstall with gcc present")
    pytest.skip(message + "; the fallback paths are tested elsewhere")


@pytest.fixture
def native_search():
    """The compiled nearest-code kernel (see :func:`require_native`)."""
    from nst_hf.quantizers import fused

    require_native(fused._fused_search, "nst_hf.quantizers._fused_search")


@pytest.fixture
def native_median():
    """The compiled running median (see :func:`require_native`)."""
    from nst_hf import _rank_filter

    require_native(_rank_filter, "nst_hf._rank_filter")


@pytest.fixture(scope="session")
def real_dir() -> Path:
    return _require(REAL)


@pytest.fixture(scope="session")
def expected(real_dir) -> dict:
    return json.loads((real_dir / "expected.json").read_text())


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


CHECKPOINTS = SHARED / "fixtures" / "checkpoints"
PARITY = SHARED / "fixtures" / "parity"


@pytest.fixture(scope="session")
def checkpoints() -> Path:
    return _require(CHECKPOINTS)


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return _require(PARITY)


@pytest.fixture(scope="session")
def upstream_dir() -> Path:
    return _require(SHARED / "data" / "upstream")


@pytest.fixture(scope="session")
def vq1(checkpoints):
    import nst_hf

    return nst_hf.NstVQTokenizer.from_pretrained(checkpoints / "vq_cnn1_cb8192.pth")


@pytest.fixture(scope="session")
def rvq(checkpoints):
    import nst_hf

    return nst_hf.NstRVQTokenizer.from_pretrained(checkpoints / "rvq_nq4_cb1024.pth")


@pytest.fixture(scope="session")
def kmeans(upstream_dir):
    import nst_hf

    return nst_hf.NstKMeansTokenizer.from_pretrained(upstream_dir / "centroids.npy", stride=8)


@pytest.fixture(scope="session")
def demo_reads(upstream_dir):
    import nst_hf

    with nst_hf.open_reads(upstream_dir / "demo.fast5") as source:
        return list(source)


# ---------------------------------------------------------------------------- tiny tokenizers (no ../shared)
#
# Seeded random weights / centroids, built in memory through the public constructors
# (``NstVQTokenizer(model=..., preprocessing=...)``, ``NstKMeansTokenizer(centroids=..., dimension=..., stride=...)``),
# so the HF API contract is tested on every kind without the shared checkpoints.

TINY_SEED = 1234
TINY_KINDS = ("tiny_vq", "tiny_rvq", "tiny_kmeans")


def _tiny_neural(cls, architecture: str, codebook_size: int, num_quantizers: int, seed: int, sampling_rate: float,
                 window_frames: int):
    """A conv VQ/RVQ tokenizer with seeded random encoder weights.

    ``window_frames`` is small, so even short test signals are encoded in several windows (a loaded copy
    uses the default 500: the same fingerprint must still give the same tokens).

    A random codebook far from the random encoder's latents would map every frame to one code, so each
    level's codebook is drawn (seeded) from the latent (level 1) or residual (later levels) frames of a
    random signal: most codes are then in use, as in a trained tokenizer.
    """
    import numpy as np
    import torch

    from nst_hf.models.conv_vq import NstConvVQConfig, NstConvVQModel
    from nst_hf.preprocessing import PreprocessingConfig, preprocess

    preprocessing = PreprocessingConfig(sampling_rate=sampling_rate)
    rng = np.random.default_rng(seed)
    signal = preprocess(_random_pa_signal(rng, 400 * codebook_size), preprocessing, sampling_rate=sampling_rate)
    with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the global torch RNG of other tests
        torch.manual_seed(seed)
        model = NstConvVQModel(NstConvVQConfig(architecture, codebook_size, num_quantizers)).eval()
    with torch.no_grad():
        residual = model.encode_latent(torch.from_numpy(signal).view(1, 1, -1))[0].T.contiguous()  # [frames, D]
        for level in range(num_quantizers):
            rows = torch.from_numpy(rng.choice(residual.shape[0], size=codebook_size, replace=False))
            model.codebooks[level].copy_(residual[rows])
            residual = residual - model.codebooks[level][model.quantize(residual, 1)[:, 0]]
    return cls(model=model, preprocessing=preprocessing, window_frames=window_frames)


@pytest.fixture(scope="session")
def tiny_vq():
    """VQ (vq_cnn1 encoder, codebook 64, 5000 Hz, windows of 128 frames) with seeded random weights."""
    import nst_hf

    return _tiny_neural(nst_hf.NstVQTokenizer, "vq_cnn1", 64, 1, TINY_SEED, 5000.0, window_frames=128)


@pytest.fixture(scope="session")
def tiny_rvq():
    """RVQ (rvq encoder, 3 levels x 32 codes, 5000 Hz, windows of 64 frames) with seeded random weights."""
    import nst_hf

    return _tiny_neural(nst_hf.NstRVQTokenizer, "rvq", 32, 3, TINY_SEED + 1, 5000.0, window_frames=64)


@pytest.fixture(scope="session")
def tiny_kmeans():
    """K-Means (48 random centroids of 32 samples, stride 8, 4000 Hz) over the K-Means chain."""
    import numpy as np

    import nst_hf
    from nst_hf.preprocessing import PreprocessingConfig

    rng = np.random.default_rng(TINY_SEED + 2)
    centroids = rng.normal(size=(48, 32)).astype(np.float32)
    return nst_hf.NstKMeansTokenizer(centroids=centroids, dimension=32, stride=8,
                                     preprocessing=PreprocessingConfig(kmeans_chain=True, sampling_rate=4000.0))


@pytest.fixture(scope="session", params=TINY_KINDS, ids=lambda name: name.removeprefix("tiny_"))
def tiny_tokenizers(request):
    """Each tiny tokenizer in turn: a test using this fixture runs once per kind."""
    return request.getfixturevalue(request.param)


def _random_pa_signal(rng, num_samples: int):
    """A nanopore-like pA signal: random piecewise-constant levels (~90 pA) plus noise, float32."""
    import numpy as np

    durations = rng.integers(5, 40, size=num_samples // 5 + 1)
    levels = np.repeat(rng.normal(90.0, 15.0, size=durations.size), durations)[:num_samples]
    return (levels + rng.normal(0.0, 2.0, size=num_samples)).astype(np.float32)


@pytest.fixture(scope="session")
def make_pa_signal():
    """``make_pa_signal(num_samples, seed=0)``: a seeded random nanopore-like pA signal (float32, 1-D)."""
    import numpy as np

    return lambda num_samples, seed=0: _random_pa_signal(np.random.default_rng(seed), num_samples)


# ---------------------------------------------------------------------------- the `shared` marker
#
# Every test that reads ../shared gets the `shared` marker, so `pytest -m "not shared"` is the loop that
# runs on a bare checkout, and `pytest -m shared` selects what CI must run with the data present.

#: Fixtures above that read ../shared (directly, or through another of them).
SHARED_FIXTURES = frozenset({"real_dir", "expected", "shared_dir", "checkpoints", "parity_dir", "upstream_dir",
                             "vq1", "rvq", "kmeans", "demo_reads"})


def _code_objects(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_consts"):
            yield from _code_objects(const)


def _dynamic_fixture_names(func, params: dict) -> set[str]:
    """Names a function may pass to ``request.getfixturevalue``: the string constants in its code, the
    strings in module globals it reads (``KINDS = ["vq1", ...]``) and its parametrize values."""
    func = getattr(func, "__wrapped__", func)
    code = getattr(func, "__code__", None)
    if code is None:
        return set()
    codes = list(_code_objects(code))
    if not any("getfixturevalue" in c.co_names for c in codes):
        return set()
    names = {v for v in params.values() if isinstance(v, str)}
    module_globals = getattr(func, "__globals__", {})
    for c in codes:
        names.update(v for v in c.co_consts if isinstance(v, str))
        for name in c.co_names:
            value = module_globals.get(name)
            if isinstance(value, str):
                names.add(value)
            elif isinstance(value, (list, tuple, set, frozenset)):
                names.update(v for v in value if isinstance(v, str))
    return names


def _uses_shared(item) -> bool:
    fixture_info = getattr(item, "_fixtureinfo", None)  # pytest's record of the fixtures an item resolved
    definitions = getattr(fixture_info, "name2fixturedefs", None)
    callspec = getattr(item, "callspec", None)
    params = dict(callspec.params) if callspec is not None else {}
    for name in SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
        if definitions is None:
            if name not in params:  # a parametrize argument named like a fixture (e.g. "rvq") shadows it
                return True
        elif definitions.get(name) and _defined_here(definitions[name][-1]):  # not shadowed or overridden
            return True
    # fixtures requested at run time (request.getfixturevalue) are not in fixturenames: look at the test
    # function and at every fixture it uses
    functions = [getattr(item, "function", None)]
    for defs in (definitions or {}).values():
        functions += [getattr(d, "func", None) for d in defs]
    return any(SHARED_FIXTURES & _dynamic_fixture_names(f, params) for f in functions if f is not None)


def _defined_here(fixturedef) -> bool:
    func = getattr(fixturedef, "func", None)
    func = getattr(func, "__wrapped__", func)
    code = getattr(func, "__code__", None)
    return code is not None and Path(code.co_filename).resolve() == Path(__file__).resolve()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _uses_shared(item):
            item.add_marker(pytest.mark.shared)


# ---------------------------------------------------------------------------- a Hub cache as `hf download` writes it

SHA = "4f1c" * 10


def hf_download_cache(cache: Path, repo_id: str, files: dict[str, Path], sha: str = SHA) -> Path:
    """Lay ``files`` ({name in repo: source file}) out as ``hf download`` does; return the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / sha
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        data = Path(source).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    return snapshot
