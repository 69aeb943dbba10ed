"""The MNIST demo: train (or reuse) a small CNN, then explain its test predictions.

    python examples/mnist_cnn.py [--out outputs/mnist] [--device cpu|cuda]

The same as ``torchexplain demo``: the demo lives in :mod:`torchexplain.demo` so the
installed console command can run it; this file stays as the runnable example.
"""

from __future__ import annotations

import sys

from torchexplain.demo import main

if __name__ == "__main__":
    sys.exit(main())
