"""Shared helpers: service directories, the mock bus, the real bus binary,
and services in subprocesses. Every wait here is bounded."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional

import pytest

from exoservice.testing import MockBus

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("EXOSERVICE_BIN_DIR", str(REPO / "target" / "debug")))


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `cargo build --workspace`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_service(
    directory: Path,
    role: str,
    receives: Iterable[str] = (),
    sends: Iterable[str] = (),
    extra: str = "",
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "service.yml").write_text(
        f"type: {role}\n"
        "messages:\n"
        f"  receives: {json.dumps(list(receives))}\n"
        f"  sends: {json.dumps(list(sends))}\n" + extra
    )
    return directory


@pytest.fixture
def bus() -> Iterator[MockBus]:
    b = MockBus()
    try:
        yield b
    finally:
        b.shutdown()


class Proc:
    """A subprocess whose output lines are collected by threads."""

    def __init__(self, args: List[str], env: Dict[str, str], cwd: Optional[Path] = None):
        full_env = dict(os.environ)
        full_env.update(env)
        full_env["PYTHONUNBUFFERED"] = "1"
        self.popen = subprocess.Popen(
            args,
            cwd=str(cwd) if cwd else None,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        for stream, sink in ((self.popen.stdout, self.stdout), (self.popen.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    def _pump(self, stream, sink: List[str]) -> None:
        for line in stream:
            sink.append(line)
            self.lines.put(line)

    def wait_for_line(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.stdout) + list(self.stderr):
                if text in line:
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or self.popen.poll() is not None and self.lines.empty():
                raise AssertionError(
                    f"no line with {text!r} within {timeout}s; exit code {self.popen.poll()}\n"
                    f"stdout:\n{''.join(self.stdout)}\nstderr:\n{''.join(self.stderr)}"
                )
            try:
                self.lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                pass

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def output(self) -> str:
        return f"stdout:\n{''.join(self.stdout)}\nstderr:\n{''.join(self.stderr)}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


@pytest.fixture
def procs() -> Iterator[List[Proc]]:
    """Processes started by a test; killed (by their own pid) at its end."""
    started: List[Proc] = []
    yield started
    for p in started:
        p.stop()


def start_python(procs: List[Proc], script: Path, env: Dict[str, str], cwd: Optional[Path] = None) -> Proc:
    p = Proc([sys.executable, str(script)], env, cwd)
    procs.append(p)
    return p


def start_exocom(procs: List[Proc], routes: Dict[str, Dict[str, List[str]]]) -> int:
    """Starts the project's bus binary on a free port; returns the port."""
    exe = str(binary("exocom"))
    for _ in range(3):
        port = free_port()
        p = Proc([exe], {"PORT": str(port), "SERVICE_DATA": json.dumps(routes)})
        procs.append(p)
        try:
            p.wait_for_line("ExoCom online at port", timeout=15)
            return port
        except AssertionError:
            if p.popen.poll() is None:
                raise
    raise AssertionError("exocom did not start on any of 3 ports")


SIGNALS = [signal.SIGINT, signal.SIGTERM]
