"""``nst-hf convert``: turn an earlier-tool checkpoint or centroids file into a saved tokenizer folder."""

from __future__ import annotations

from nst_hf.cli._source import add_source_options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert an upstream .pth checkpoint or centroids file to a tokenizer folder",
        description="Convert a nanopore_signal_tokenizer checkpoint (VQ dict, RVQ state dict with encoder.* or "
                    "encoder.net.* keys) or K-Means centroids (.npy, pickled-dict .npy, .npz) into a folder that "
                    "from_pretrained / AutoTokenizer load. SRC is the file, or a folder or Hub repo holding it "
                    "(--filename picks one of several, --revision a Hub revision). Weights are stored as "
                    "safetensors, never pickled.")
    parser.add_argument("source", metavar="SRC", help="upstream .pth/.pt checkpoint or .npy/.npz centroids, or a "
                                                      "folder or Hub repo id holding one")
    parser.add_argument("output", metavar="OUT_DIR", help="folder to write")
    parser.add_argument("--kind", choices=["auto", "vq", "rvq", "kmeans"], default="auto",
                        help="tokenizer kind (default: detected from the file)")
    parser.add_argument("--dimension", type=int, default=None, help="K-Means window length when the file lacks it")
    add_source_options(parser)
    parser.set_defaults(func=run)


def convert(source, output, kind: str = "auto", sampling_rate=None, stride=None, dimension=None,
            trust_pickle: bool = False, revision: str | None = None, filename: str | None = None):
    """Load the upstream file ``source`` (a file, or a folder or Hub repo holding one) with the right class and
    ``save_pretrained`` it to ``output``; return the tokenizer."""
    from pathlib import Path

    from nst_hf.errors import CheckpointError
    from nst_hf.models.upstream_source import find_upstream_file

    where = {"vq": "neural", "rvq": "neural", "kmeans": "kmeans"}.get(kind, "any")
    path = Path(source)
    if path.is_file():
        found_path, origin = path, None
    else:
        found = find_upstream_file(str(source), where, filename=filename, revision=revision)
        if found is None and not path.exists():
            raise FileNotFoundError(f"{source}: no such file or folder, nor a Hub repo of that name (offline: not in "
                                    "the cache)")
        if found is None:
            raise CheckpointError(f"{source}: no upstream checkpoint (.pth/.pt/.ckpt) or centroids (.npy/.npz) found "
                                  "there (a folder written by save_pretrained needs no conversion)")
        found_path, origin = found.path, found.source
    tok = _load(found_path, origin, kind, sampling_rate, stride, dimension, trust_pickle)
    tok.save_pretrained(output)
    return tok


def _load(path, origin, kind: str, sampling_rate, stride, dimension, trust_pickle: bool):
    from nst_hf.tokenizers import NstKMeansTokenizer, NstRVQTokenizer, NstVQTokenizer

    if kind == "auto":
        from nst_hf.auto import from_upstream_file

        return from_upstream_file(path, origin, dict(sampling_rate=sampling_rate, stride=stride, dimension=dimension,
                                                      trust_pickle=trust_pickle))
    if kind == "kmeans":
        return NstKMeansTokenizer.from_upstream(path, dimension=dimension, stride=stride, trust_pickle=trust_pickle,
                                                sampling_rate=sampling_rate, source=origin)
    cls = NstRVQTokenizer if kind == "rvq" else NstVQTokenizer
    return cls.from_upstream(path, sampling_rate=sampling_rate, source=origin)


def run(args) -> int:
    tok = convert(args.source, args.output, args.kind, args.sampling_rate, args.stride, args.dimension,
                  args.trust_pickle, args.revision, args.filename)
    print(f"wrote {type(tok).__name__} ({tok.bwav_kind}, {tok.codebook_size} codes x {tok.num_quantizers}, "
          f"{tok.samples_per_token} samples/token) to {args.output}")
    return 0
