"""Register the tokenizer classes with ``transformers.AutoTokenizer`` without importing transformers early.

``import nst_hf`` must let ``AutoTokenizer.from_pretrained(folder)`` find ``NstVQTokenizer`` & co., but
must not import torch or transformers itself (``nst-hf -h``, ``import nst_hf.io``). So registration
happens at whichever comes first: now, if transformers' auto-tokenizer module is already loaded; or
right after it loads; or when :mod:`nst_hf.tokenizers` is imported (which registers itself).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys

logger = logging.getLogger(__name__)

#: The transformers module whose loading triggers the registration.
AUTO_TOKENIZER_MODULE = "transformers.models.auto.tokenization_auto"


def _register() -> None:
    tokenizers = sys.modules.get("nst_hf.tokenizers")
    if tokenizers is not None and getattr(getattr(tokenizers, "__spec__", None), "_initializing", False):
        return  # nst_hf.tokenizers is being imported right now and registers itself when it is done
    try:
        importlib.import_module("nst_hf.tokenizers")
    except Exception as exc:  # transformers must stay importable whatever happens here
        logger.warning("could not register the nst_hf tokenizers with AutoTokenizer: %s", exc)


class _AfterImport(importlib.abc.MetaPathFinder):
    """A one-shot finder that runs :func:`_register` once :data:`AUTO_TOKENIZER_MODULE` has executed."""

    def find_spec(self, name, path=None, target=None):
        if name != AUTO_TOKENIZER_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            _register()

        loader.exec_module = exec_module
        return spec


def register_with_transformers() -> None:
    """Register now if transformers' auto classes are loaded, otherwise as soon as they load."""
    if AUTO_TOKENIZER_MODULE in sys.modules:
        _register()
    elif not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
