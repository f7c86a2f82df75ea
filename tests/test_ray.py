"""Ray Data scale-out gives exactly the single-process output (on a local Ray instance)."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="the `ray` extra is not installed")


@pytest.fixture(scope="module")
def local_ray():
    # 4 logical CPUs on this 2-core machine: 2 tokenizer actors hold one each, file-reading tasks need the rest
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_tokenize_equals_single_process(local_ray, real_dir, tmp_path, upstream_dir):
    import nst_hf
    import nst_hf.ray as nst_ray
    from nst_hf.output import read_jsonl

    source = real_dir / "slow5-pod5-bench"
    centroids = str(upstream_dir / "centroids.npy")
    reads = nst_ray.read_signal_files(ray.data, [source])
    tokens = nst_ray.tokenize_dataset(reads, tokenizer=centroids, load_kwargs={"stride": 8}, num_actors=2, batch_size=4)
    got = sorted((row["id"], row["text"]) for row in tokens.take_all())  # 5 files hold the same 4 reads
    tok = nst_hf.NstKMeansTokenizer.from_pretrained(centroids, stride=8)
    nst_hf.tokenize_file(tok, source, tmp_path / "single.jsonl")
    expected = sorted((row["id"], row["text"]) for row in read_jsonl(tmp_path / "single.jsonl"))
    assert len(got) == 20 and got == expected
    tokens.write_parquet(str(tmp_path / "parquet"))
    assert sum(1 for _ in (tmp_path / "parquet").glob("*.parquet")) >= 1
