"""Compare two ``lower run --output`` files: exit 0 when every array is bit-for-bit equal, else 1.

    python examples/compare_outputs.py out/cnn_npu_outputs.npz out/cnn_int8_outputs.npz

``make demo`` uses it to show that the custom target (NPU-1, simulated) and the cpu target's int8 path
compute the same integers.
"""

import sys

import numpy as np


def main(a: str, b: str) -> int:
    with np.load(a) as x, np.load(b) as y:
        if sorted(x.files) != sorted(y.files):
            print(f"different outputs: {sorted(x.files)} vs {sorted(y.files)}")
            return 1
        same = True
        for key in x.files:
            equal = np.array_equal(x[key], y[key])
            same &= equal
            print(f"{key}: {'bit-for-bit equal' if equal else 'DIFFERENT'} ({a} vs {b})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
