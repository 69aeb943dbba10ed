"""A server on this machine, for the demo, the benchmarks and the tests: started in a subprocess,
waited for until it answers, stopped (SIGTERM, then SIGKILL). Plus the two HTTP helpers
they share. Not for production: there, MLServer or KServe starts the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "Process",
    "explain_request_body",
    "free_port",
    "post_json",
    "running",
    "torchexplain_command",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Process:
    """A server command in a subprocess: started, waited for until ``ready_url`` answers 200,
    stopped (SIGTERM, then SIGKILL) by :meth:`stop`. Its output goes to ``log``; ``env`` is its
    environment (default: this process's)."""

    def __init__(
        self,
        command: list[str],
        ready_urls: list[str],
        log: str | Path,
        timeout: float = 90.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command, self.ready_urls, self.log_path = command, ready_urls, Path(log)
        self.timeout = timeout
        self.env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen | None = None

    def start(self) -> Process:
        """Launch the command and wait until every ready URL answers 200."""
        return self.launch().wait_ready()

    def launch(self) -> Process:
        """Start the subprocess without waiting for it (see :func:`running` for several)."""
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self._deadline = time.monotonic() + self.timeout
        return self

    def wait_ready(self) -> Process:
        """Poll the ready URLs until each answers 200; raise (and stop) if the process exits or
        the timeout, counted from :meth:`launch`, passes."""
        if self.process is None:
            raise RuntimeError("wait_ready() before launch()")
        pending = list(self.ready_urls)
        while pending:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.command[:4]} exited with {self.process.returncode}:\n{self.output()}"
                )
            if time.monotonic() > self._deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.command[:4]} not ready within {self.timeout:g} s:\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(pending[0], timeout=2) as answer:
                    if answer.status == 200:
                        pending.pop(0)
                        continue
            except OSError:
                pass
            time.sleep(0.1)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, up to 15 s to exit, then SIGKILL; closes the log."""
        self.terminate()
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def terminate(self) -> None:
        """Send SIGTERM without waiting (:meth:`stop` waits)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def running(*processes: Process) -> Iterator[tuple[Process, ...]]:
    """Several servers at once: all launched before any is waited for (their start-ups overlap),
    all sent SIGTERM before any is waited for on the way out."""
    try:
        for process in processes:
            process.launch()
        for process in processes:
            process.wait_ready()
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.stop()


def torchexplain_command(*args: str) -> list[str]:
    """``torchexplain ARGS`` run by this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "torchexplain.cli", *args]


def explain_request_body(rows: Any, explain_parameters: Any = None) -> dict[str, Any]:
    """A v2 explain request for ``rows`` ``(N, ...)`` as FP32, with optional ``explain_parameters``."""
    import numpy as np

    rows = np.asarray(rows, dtype=np.float32)
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "rows",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.reshape(-1).tolist(),
            }
        ]
    }
    if explain_parameters is not None:
        body["parameters"] = {"explain_parameters": explain_parameters}
    return body


_POOL: Any = None


def post_json(url: str, body: Any, timeout: float = 60.0) -> tuple[int, Any]:
    """POST ``body`` (an object, or bytes sent as they are); the status and the decoded JSON answer.

    Connections are kept alive between calls (one urllib3 pool per process), as a client
    library such as ``requests.Session`` keeps them.
    """
    global _POOL
    import urllib3

    if _POOL is None:
        _POOL = urllib3.PoolManager(maxsize=16, retries=False)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = _POOL.request(
        "POST",
        url,
        body=data,
        headers={"Content-Type": "application/json"},
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
    )
    try:
        return answer.status, json.loads(answer.data)
    except json.JSONDecodeError:
        return answer.status, {"error": answer.data.decode(errors="replace")}
