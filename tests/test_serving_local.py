"""serving.local: servers started in subprocesses for the demo, benchmarks and tests (127.0.0.1)."""

from __future__ import annotations

import sys
import time
import urllib.request

import pytest

from torchexplain.serving.local import Process, free_port, running


def http_server(tmp_path, name: str, port: int) -> Process:
    """Python's own file server: a subprocess that answers 200 on / once it listens."""
    return Process(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        [f"http://127.0.0.1:{port}/"],
        tmp_path / f"{name}.log",
        timeout=30,
    )


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def test_running_launches_every_server_before_waiting_and_stops_them_all(tmp_path, monkeypatch):
    ports = [free_port(), free_port()]
    servers = [http_server(tmp_path, f"s{i}", port) for i, port in enumerate(ports)]
    launched_at = {}
    original = Process.wait_ready

    def wait_ready(self):
        # by the time the first server is waited for, both have been launched
        launched_at[id(self)] = [s.process is not None for s in servers]
        return original(self)

    monkeypatch.setattr(Process, "wait_ready", wait_ready)
    with running(*servers):
        assert all(answers(port) for port in ports)
        assert all(s.alive() for s in servers)
    assert launched_at[id(servers[0])] == [True, True]
    assert not any(s.alive() for s in servers)
    assert not any(answers(port) for port in ports)


def test_running_stops_the_others_when_one_fails_to_start(tmp_path):
    good = http_server(tmp_path, "good", free_port())
    bad = Process(
        [sys.executable, "-c", "import sys; sys.exit(3)"],
        [f"http://127.0.0.1:{free_port()}/"],
        tmp_path / "bad.log",
        timeout=30,
    )
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with 3"):
        with running(good, bad):
            pass  # pragma: no cover - never reached
    assert time.monotonic() - start < 30
    assert not good.alive() and not bad.alive()
