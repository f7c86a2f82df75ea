"""``nst-hf convert``: turn an earlier-tool checkpoint or centroids file into a saved tokenizer folder."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert an upstream .pth checkpoint or centroids file to a tokenizer folder",
        description="Convert a nanopore_signal_tokenizer checkpoint (VQ dict, RVQ state dict with encoder.* or "
                    "encoder.net.* keys) or K-Means centroids (.npy, pickled-dict .npy, .npz) into a folder that "
                    "from_pretrained / AutoTokenizer load. Weights are stored as safetensors, never pickled.")
    parser.add_argument("source", metavar="SRC", help="upstream .pth/.pt checkpoint or .npy/.npz centroids")
    parser.add_argument("output", metavar="OUT_DIR", help="folder to write")
    parser.add_argument("--kind", choices=["auto", "vq", "rvq", "kmeans"], default="auto",
                        help="tokenizer kind (default: detected from the file)")
    parser.add_argument("--sampling-rate", type=float, default=None,
                        help="record the rate (Hz) the model was trained at; reads at other rates are then refused")
    parser.add_argument("--stride", type=int, default=None, help="K-Means window stride when the file lacks it")
    parser.add_argument("--dimension", type=int, default=None, help="K-Means window length when the file lacks it")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a pickled centroids dict (unpickling can run code: only for trusted files)")
    parser.set_defaults(func=run)


def convert(source, output, kind: str = "auto", sampling_rate=None, stride=None, dimension=None,
            trust_pickle: bool = False):
    """Load ``source`` with the right class and ``save_pretrained`` it to ``output``; return the tokenizer."""
    from pathlib import Path

    from nst_hf.tokenizers import NstKMeansTokenizer, NstRVQTokenizer, NstVQTokenizer
    from nst_hf.auto import load_tokenizer

    source = Path(source)
    if kind == "auto":
        if not source.is_file():
            raise FileNotFoundError(f"{source}: no such checkpoint or centroids file")
        tok = load_tokenizer(source, sampling_rate=sampling_rate, stride=stride, dimension=dimension,
                             trust_pickle=trust_pickle)
    elif kind == "kmeans":
        tok = NstKMeansTokenizer.from_upstream(source, dimension=dimension, stride=stride,
                                                      trust_pickle=trust_pickle, sampling_rate=sampling_rate)
    else:
        cls = NstRVQTokenizer if kind == "rvq" else NstVQTokenizer
        tok = cls.from_upstream(source, sampling_rate=sampling_rate)
    tok.save_pretrained(output)
    return tok


def run(args) -> int:
    tok = convert(args.source, args.output, args.kind, args.sampling_rate, args.stride, args.dimension,
                  args.trust_pickle)
    print(f"wrote {type(tok).__name__} ({tok.bwav_kind}, {tok.codebook_size} codes x {tok.num_quantizers}, "
          f"{tok.samples_per_token} samples/token) to {args.output}")
    return 0
