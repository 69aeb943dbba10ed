"""Packaging entry for torchexplain.

``kernels/`` lives at the top of the repository (next to ``torchexplain/``) so the
Triton kernels and their references are easy to find, but it is installed as
``torchexplain.kernels``: nothing named bare ``kernels`` lands in site-packages.
"""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "torchexplain" / "_version.py").read_text(), re.M
).group(1)


def find_packages_under(root: str, prefix: str) -> list[str]:
    """Dotted names of every package (a folder with __init__.py) under ``root``."""
    names = []
    for init in sorted((HERE / root).rglob("__init__.py")):
        parts = init.parent.relative_to(HERE / root).parts
        names.append(".".join((prefix, *parts)))
    return names


PACKAGES = find_packages_under("torchexplain", "torchexplain")
KERNEL_PACKAGES = find_packages_under("kernels", "torchexplain.kernels")

setup(
    name="torchexplain",
    version=VERSION,
    description="Fast, batched explanations (Integrated Gradients, counterfactuals, anchors, SHAP) for PyTorch models",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=PACKAGES + KERNEL_PACKAGES,
    package_dir={"torchexplain": "torchexplain", "torchexplain.kernels": "kernels"},
    package_data={
        "torchexplain": ["py.typed"],
        "torchexplain.datasets": ["*.csv.gz", "*.txt.gz", "*.safetensors", "NOTICE.md"],
    },
    include_package_data=False,
    # safetensors: how saved explainers store tensors (no pickle).
    install_requires=[
        "torch>=2.1",
        "numpy>=1.23",
        "pillow>=9.0",
        "scikit-image>=0.19",
        "safetensors>=0.4",
    ],
    extras_require={
        "test": [
            "pytest>=7.0",
            "captum>=0.7",
            # Runs the IG Triton kernels through its CPU interpreter (wheels: Linux only).
            "triton>=3.0; platform_system == 'Linux'",
            # KernelShap/TreeShap are tested against shap; TreeShap runs on it; the L1
            # selection and background k-means use scikit-learn.
            "shap>=0.43",
            "scikit-learn>=1.2",
            # the serve extra, tested against live local servers: the HTTP client of
            # RemoteModel, and MLServer (whose web stack also serves the KServe explainer).
            "urllib3>=2.0",
            "mlserver>=1.7,<1.8; python_version < '3.13'",
            # clients nobody here wrote, run against the servers (tests/test_serving_clients.py);
            # Alibi's parser and the kserve SDK get environments of their own (tests/_venvs.py)
            "tritonclient[http,grpc]>=2.42; python_version < '3.13'",
            "requests>=2.28",
            # the docs site is built (--strict) and its examples run by the tests
            "mkdocs>=1.6",
            "mkdocs-material>=9.5",
            "mkdocstrings[python]>=0.26",
            # AnchorText's language_model sampler, on a tiny masked LM trained by the tests
            "transformers>=4.40",
            # torchexplain.fairness is tested against fairlearn (never a dependency of the
            # package) and draws its report with matplotlib
            "fairlearn>=0.15",
            "matplotlib>=3.5",
            # ExplainBatches is run under Ray Data on a local 2-CPU cluster
            "ray[data]>=2.50",
        ],
        # MLServer 1.7 supports Python 3.9-3.12; RemoteModel alone needs only urllib3 (http://)
        # or grpcio with MLServer's v2 messages (grpc://), which MLServer brings.
        "serve": ["urllib3>=2.0", "mlserver>=1.7,<1.8; python_version < '3.13'"],
        "bench": ["captum>=0.7", "shap>=0.43", "scikit-learn>=1.2"],
        "shap": ["shap>=0.43", "scikit-learn>=1.2"],
        # this site: MkDocs with the Material theme and mkdocstrings (API pages from the docstrings)
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"],
        # AnchorText's language_model sampler: a Hugging Face masked LM, loaded from local files only
        "text": ["transformers>=4.40"],
        # the pictures of the fairness report and of evaluate (the numbers need only torch)
        "plots": ["matplotlib>=3.5"],
        # whole datasets on Ray Data (ExplainBatches); torchrun needs nothing more than torch
        "ray": ["ray[data]>=2.50"],
        "fairness": ["matplotlib>=3.5"],
        "dev": ["ruff>=0.5"],
    },
    entry_points={"console_scripts": ["torchexplain = torchexplain.cli:console_main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
