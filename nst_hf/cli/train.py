"""``nst-hf train kmeans|vq|rvq``: make your own tokenizer from signal files."""

from __future__ import annotations

import shlex


def _command(args) -> str:
    return "nst-hf " + " ".join(shlex.quote(a) for a in args.argv)


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a K-Means, VQ or RVQ tokenizer",
                                   description="Train a tokenizer on signal files; writes a saved tokenizer folder.")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True

    km = kinds.add_parser("kmeans", help="faiss K-Means centroids over windows of the K-Means chain",
                          description="Sample windows (reservoir sampling, so any input size works) and cluster them.")
    km.add_argument("inputs", nargs="+", metavar="INPUT")
    km.add_argument("-o", "--output", required=True, help="output folder")
    km.add_argument("--num-codes", type=int, default=8192)
    km.add_argument("--window", type=int, default=32, help="window length in samples (default 32)")
    km.add_argument("--stride", type=int, default=8, help="samples between windows (default 8)")
    km.add_argument("--max-windows", type=int, default=2_000_000, help="windows clustered at most (default 2e6)")
    km.add_argument("--iterations", type=int, default=20)
    km.add_argument("--sampling-rate", type=float, default=None, help="record the training rate (Hz)")
    km.add_argument("--seed", type=int, default=0)
    km.add_argument("--gpu", action="store_true", help="cluster on GPU (needs faiss-gpu)")
    km.set_defaults(func=run_kmeans)

    for name, help_text in (("vq", "conv encoder + one codebook"), ("rvq", "conv encoder + residual codebooks")):
        sub = kinds.add_parser(name, help=help_text,
                               description=f"Self-supervised autoencoder training ({help_text}) with "
                                           "vector-quantize-pytorch: k-means init, EMA, dead-code replacement. "
                                           "Run under `torchrun --nproc_per_node=N` for several GPUs.")
        sub.add_argument("inputs", nargs="+", metavar="INPUT")
        sub.add_argument("-o", "--output", required=True, help="output folder (also holds the resumable checkpoint)")
        if name == "vq":
            sub.add_argument("--cnn-type", type=int, choices=[0, 1, 2], default=1,
                             help="encoder: 0 (1→64→128→256), 1 (1→16→32→64), 2 (stride 12, D=512)")
        sub.add_argument("--codebook-size", type=int, default=1024)
        sub.add_argument("--num-quantizers", type=int, default=4 if name == "rvq" else 1, help="RVQ levels")
        sub.add_argument("--chunk-length", type=int, default=1200, help="training chunk in samples")
        sub.add_argument("--steps", type=int, default=1000)
        sub.add_argument("--batch-size", type=int, default=16)
        sub.add_argument("--lr", type=float, default=1e-3)
        sub.add_argument("--sampling-rate", type=float, default=5000.0,
                         help="reads at other rates are resampled to this (Hz, default 5000)")
        sub.add_argument("--max-samples", type=int, default=50_000_000, help="samples held for training")
        sub.add_argument("--hold-out", default=None, metavar="FILE",
                         help="signal file whose reads are excluded from training (for evaluation)")
        sub.add_argument("--device", default="cpu")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--checkpoint-every", type=int, default=200)
        sub.add_argument("--resume", action="store_true", help="continue from OUTPUT/training_checkpoint.pt")
        sub.set_defaults(func=run_vq, architecture=None if name == "vq" else "rvq")


def run_kmeans(args) -> int:
    from nst_hf.training import KMeansTrainingConfig, train_kmeans

    tok = train_kmeans(KMeansTrainingConfig(inputs=args.inputs, output_dir=args.output, num_codes=args.num_codes,
                                            window=args.window, stride=args.stride, max_windows=args.max_windows,
                                            iterations=args.iterations, sampling_rate=args.sampling_rate,
                                            seed=args.seed, gpu=args.gpu, command=_command(args)))
    info = tok.training_info
    print(f"wrote K-Means tokenizer ({args.num_codes} codes) to {args.output}: clustered {info['windows_used']:,} of "
          f"{info['windows_seen']:,} windows from {info['reads']} reads")
    return 0


def run_vq(args) -> int:
    from nst_hf.io import open_reads
    from nst_hf.training import VQTrainingConfig, train_vq

    held_out = []
    if args.hold_out:
        with open_reads(args.hold_out) as source:
            held_out = [r.read_id for r in source]
    architecture = args.architecture or f"vq_cnn{args.cnn_type}"
    config = VQTrainingConfig(inputs=args.inputs, output_dir=args.output, architecture=architecture,
                              codebook_size=args.codebook_size, num_quantizers=args.num_quantizers,
                              chunk_length=args.chunk_length, steps=args.steps, batch_size=args.batch_size,
                              lr=args.lr, sampling_rate=args.sampling_rate, max_samples=args.max_samples,
                              held_out_read_ids=held_out, device=args.device, seed=args.seed,
                              checkpoint_every=args.checkpoint_every, resume=args.resume,
                              command=_command(args))
    tok = train_vq(config)
    last = tok.training_info["history"][-1]
    print(f"wrote {type(tok).__name__} to {args.output}: step {last['step']}, reconstruction MSE {last['recon']}, "
          f"codes used in the last batch {last['batch_codes_used']}")
    return 0
