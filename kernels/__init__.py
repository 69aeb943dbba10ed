"""torchexplain's compute kernels, installed as ``torchexplain.kernels``.

Each op has three layers: ``<op>/reference.py`` (plain PyTorch: the CPU fallback
and the test oracle), ``<op>/triton.py`` (Triton kernels and their launchers, when
an op has them) and ``<op>/__init__.py`` (the one function that chooses).
"""
