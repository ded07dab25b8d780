"""A writable buffer changed while it is decoded never yields an array
that reaches past its bytes.

Decoding checks the whole buffer once, then builds arrays; Python code can
run in between (the first bf16 array imports ml_dtypes), and a bytearray
can be written meanwhile. The arrays are made only when their shape still
fits the bytes the check found.
"""

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import sys, types
    import numpy as np
    from tenstore import tenbin, FormatError

    buf = bytearray(tenbin.encode_buffer([np.zeros(1, "<u2"), np.zeros(8, "u1")]))
    buf[16:24] = b"bf16".ljust(8, b"\\0")  # tensor 0 becomes bf16
    # Tensor 1's header: its dtype code, name, ndim, then its one dim (8).
    code = buf.index(b"u1".ljust(8, b"\\0"), 64)
    dim = code + 24
    if int.from_bytes(buf[dim:dim + 8], "little") != 8:
        raise SystemExit("test setup: tensor 1's dimension is not where expected")

    def getattr_(name):
        # Runs between the checking pass and the arrays: tensor 1 now
        # claims 2**40 elements over its 8 bytes.
        buf[dim:dim + 8] = (1 << 40).to_bytes(8, "little")
        return np.dtype("<u2")

    fake = types.ModuleType("ml_dtypes")
    fake.__getattr__ = getattr_
    sys.modules["ml_dtypes"] = fake
    try:
        arrays = tenbin.decode_buffer(buf)
    except FormatError as e:
        print("refused:", e)
    else:
        raise SystemExit(f"decoded arrays of sizes {[a.size for a in arrays]}")
    """
)


def test_a_header_changed_mid_decode_is_refused_not_read_past_its_bytes():
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0 or "refused:" not in out.stdout:
        raise AssertionError(
            f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
        )
    if "changed while it was decoded" not in out.stdout:
        raise AssertionError(out.stdout)
