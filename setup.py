"""Build script: metadata lives in setup.cfg; this adds the optional C search kernel."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "nst_hf.quantizers._fused_search",
            ["nst_hf/quantizers/_fused_search.c"],
            extra_compile_args=["-O3"],
            optional=True,  # without a C compiler nst_hf still installs and searches with torch
        )
    ]
)
