"""Virtual environments for peers that cannot be installed beside torchexplain's test environment.

Alibi 0.9.6 needs numpy < 2; the kserve SDK pins a starlette that MLServer 1.7 refuses. Their
clients are still what users run against our servers, so the tests run them in environments of
their own: created once with pip (from the package index), kept under the cache folder
(``$TORCHEXPLAIN_CACHE/test-venvs``), reused by later runs. Where one cannot be created (no
index, no network), the tests that need it skip, saying why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from torchexplain.zoo import default_cache_dir

#: the peers' environments: what pip installs, pinned to the versions tested
PEERS = {
    # click: spacy (an alibi dependency) imports it, and the versions pip picks no longer bring it
    "alibi": ["alibi==0.9.6", "numpy<2", "click"],
    "kserve": ["kserve==0.21.0"],
}
#: the longest an environment may take to create (two run at once on the 2-core CI machine)
CREATE_TIMEOUT_S = 420

_LOCK = threading.Lock()
_STARTED: dict[str, subprocess.Popen] = {}


def _folder(name: str) -> Path:
    digest = hashlib.sha256(" ".join(PEERS[name]).encode()).hexdigest()[:10]
    return default_cache_dir() / "test-venvs" / f"{name}-{digest}"


def python_of(name: str) -> Path:
    return _folder(name) / "bin" / "python"


def start(*names: str) -> None:
    """Begin creating the environments not made yet, in the background, all at once."""
    with _LOCK:
        for name in names:
            folder = _folder(name)
            if (folder / "ready").exists() or name in _STARTED:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            folder.parent.mkdir(parents=True, exist_ok=True)
            script = (
                f'"{sys.executable}" -m venv --clear "{folder}" && '
                f'"{folder}/bin/python" -m pip install -q --disable-pip-version-check '
                + " ".join(f'"{r}"' for r in PEERS[name])
                + f' && touch "{folder}/ready"'
            )
            log = open(folder.parent / f"{folder.name}.log", "wb")  # noqa: SIM115 - the process owns it
            _STARTED[name] = subprocess.Popen(
                ["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
            )


def ready(name: str) -> Path | str:
    """The environment's python once it is made, or a string saying why it could not be."""
    start(name)
    folder = _folder(name)
    process = _STARTED.get(name)
    if process is not None:
        try:
            process.wait(timeout=CREATE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            return f"creating the {name} environment took over {CREATE_TIMEOUT_S} s"
    if not (folder / "ready").exists():
        log = folder.parent / f"{folder.name}.log"
        tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
        return f"could not create the {name} environment ({' '.join(PEERS[name])}): {tail}"
    return python_of(name)
