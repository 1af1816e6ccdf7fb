"""Skip markers shared by the native-kernel tests (tests/test_quant_native.py, tests/test_fast_decode.py).

PyTorch packs int4 weights in row tiles whose size depends on the CPU's kernels (32 on AVX2; AVX-512 builds may
use 64 or another layout). dodai reads the layouts its probe recognises and otherwise keeps PyTorch's kernel
(test_unknown_layout_keeps_pytorchs_kernel in test_quant_native.py runs on every CPU)."""

from __future__ import annotations

import pytest

from dodai.quant import int4, native

NATIVE = [
    pytest.mark.skipif(not int4.available(), reason="this PyTorch has no CPU 4-bit kernel"),
    pytest.mark.skipif(not native.available(), reason="no C compiler or no AVX2/FMA CPU: native kernels not built"),
]
KNOWN_LAYOUT = int4.available() and native.available() and native.int4_tile(128, 128) in (32, 64)
needs_known_layout = pytest.mark.skipif(not KNOWN_LAYOUT, reason="PyTorch's packed int4 layout on this CPU is not "
                                        "one dodai's kernels read; PyTorch's kernel runs instead")
