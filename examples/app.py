"""A small application: load an artifact with only the runtime (no compiler, no onnx) and classify.

    python examples/app.py out/cnn.lwr examples/cnn_input.npz
"""

import sys

import numpy as np

import runtime


def main(artifact: str, inputs: str) -> int:
    sess = runtime.load(artifact)
    print(f"loaded {artifact} on target '{sess.target}'")
    for info in sess.inputs:
        print(f"  input  {info.name}: {info.dtype}{list(info.shape)}")
    for info in sess.outputs:
        print(f"  output {info.name}: {info.dtype}{list(info.shape)}")
    with np.load(inputs, allow_pickle=False) as data:
        feed = {info.name: data[info.name] for info in sess.inputs}
    (logits,) = sess.run(None, feed)
    top = np.argsort(-logits[0])[:3]
    print("top-3 classes:", ", ".join(f"{c} ({logits[0, c]:.3f})" for c in top))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("lowering", "passes", "targets", "onnx"))
    print("compiler modules loaded by the application:", loaded or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
