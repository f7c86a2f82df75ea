"""The ``nst-hf`` command line: ``nst-hf <command> -h`` for each command's help.

Each command module has ``register(subparsers)`` and ``run(args)``; heavy imports happen inside
``run`` so that ``-h`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from nst_hf._version import __version__

COMMANDS = ("tokenize", "pairs", "train", "evaluate", "convert", "inspect", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst-hf", description="Nanopore raw-signal tokenizers for language models.")
    parser.add_argument("--version", action="version", version=f"nst-hf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    from importlib import import_module

    for name in COMMANDS:
        import_module(f"nst_hf.cli.{name}").register(subparsers)
    return parser


def init_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Configure the ``nst_hf`` logger for command-line use (the library itself never does this)."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[nst-hf] %(levelname)s %(message)s"))
    logger = logging.getLogger("nst_hf")
    logger.handlers[:] = [handler]
    logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status. Errors print one line unless ``NST_HF_DEBUG=1``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    init_logging(args.verbose, args.quiet)
    from nst_hf._allocator import keep_freed_memory

    keep_freed_memory()  # an entry point: this process is ours (a library call leaves the allocator alone)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `nst-hf inspect ... | head`: the reader left; end quietly, as `yes | head` does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("nst-hf: interrupted; an interrupted `tokenize` or `pairs` continues with --resume", file=sys.stderr)
        return 130
    except _Terminated:
        print("nst-hf: terminated; an interrupted `tokenize` or `pairs` continues with --resume", file=sys.stderr)
        return 143
    except Exception as exc:  # the one place that catches everything
        if os.environ.get("NST_HF_DEBUG") == "1":
            raise
        message = os.fsencode(str(exc)).decode("utf-8", errors="backslashreplace")
        print(f"nst-hf: error: {type(exc).__name__}: {message} (set NST_HF_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the run ends through its normal clean-up."""


def _terminate(signum, frame):
    raise _Terminated()
