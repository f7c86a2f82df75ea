"""Tokenize signal files with Ray Data, one tokenizer per actor, and write Parquet.

    python examples/ray_tokenize.py examples/data out_parquet/ --tokenizer default --actors 2
    # on a cluster: RAY_ADDRESS=auto python examples/ray_tokenize.py /shared/run s3://bucket/tokens --gpus-per-actor 1
"""

import argparse

import ray

import nst_hf.ray as nst_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("output")
    parser.add_argument("--tokenizer", default="default")
    parser.add_argument("--token-type", default=None)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--gpus-per-actor", type=float, default=0)
    args = parser.parse_args()
    ray.init()  # uses RAY_ADDRESS when set (an existing cluster), else a local instance
    reads = nst_ray.read_signal_files(ray.data, args.inputs)
    tokens = nst_ray.tokenize_dataset(reads, tokenizer=args.tokenizer, token_type=args.token_type,
                                      num_actors=args.actors, num_gpus_per_actor=args.gpus_per_actor)
    tokens.write_parquet(args.output)
    print(f"wrote {tokens.count()} tokenized reads to {args.output}")


if __name__ == "__main__":
    main()
