"""Build script: metadata lives in setup.cfg; this adds the optional C kernels (search, encoder layer, running median)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "nst_hf.quantizers._fused_search",
            ["nst_hf/quantizers/_fused_search.c"],
            # -ffp-contract=off: pair_distances must round like its NumPy twin (no fused multiply-add)
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,  # without a C compiler nst_hf still installs and searches with torch
        ),
        Extension(
            "nst_hf.models._conv_rows",
            ["nst_hf/models/_conv_rows.c"],
            extra_compile_args=["-O3"],
            optional=True,  # without it the encoder's strided layers use torch's BLAS products
        ),
        Extension(
            "nst_hf._rank_filter",
            ["nst_hf/_rank_filter.c"],
            extra_compile_args=["-O3"],
            optional=True,  # without it the running medians use scipy.ndimage (same values, one thread)
        ),
    ]
)
