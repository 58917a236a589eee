"""Python services over NATS (a real nats-server): the handler code of an
ExoCom service runs unchanged; the transport, the routes and the delivery
modes come from the environment. An at-least-once message whose handler
raises comes again, and ``ctx.delivery_attempt`` tells which attempt it is."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

from exoservice import Service
from exoservice.testing import MockBus, running

from conftest import free_port, write_service

REDELIVERY_DELAY_MS = 100

ROUTES = {
    "users": {
        "receives": ["users.create"],
        "sends": ["users.created"],
        "atLeastOnce": ["users.create"],
    },
    "web": {"receives": ["users.created"], "sends": ["users.create"]},
}


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
    )
    if found is None:
        pytest.fail("nats-server is missing: install the Debian package nats-server")
    return found


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server with JetStream on a free port of 127.0.0.1, for the
    tests of this module (each test uses an application name of its own)."""
    exe = nats_server_binary()
    store = tmp_path_factory.mktemp("jetstream")
    for _ in range(3):
        port = free_port()
        log = open(store / f"nats-{port}.log", "w")
        proc = subprocess.Popen(
            [exe, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        if wait_for_port(port, proc, timeout=10.0):
            break
        proc.kill()
        proc.wait(timeout=10)
        log.close()
    else:
        raise AssertionError(f"nats-server did not start on any of 3 ports; see {store}")
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def nats_env(nats_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The variables that put a service on NATS, with a fresh application
    name; returns that name."""
    app = f"py-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("EXOSERVICE_TRANSPORT", "nats")
    monkeypatch.setenv("NATS_URL", nats_url)
    monkeypatch.setenv("EXOSERVICE_APP", app)
    monkeypatch.setenv("EXOSERVICE_ROUTES", json.dumps(ROUTES))
    monkeypatch.setenv("EXOSERVICE_REDELIVERY_DELAY_MS", str(REDELIVERY_DELAY_MS))
    monkeypatch.setenv("ROLE", "users")
    for var in ("EXOCOM_HOST", "EXOCOM_PORT", "EXOCOM_URL"):
        monkeypatch.delenv(var, raising=False)
    return app


def service_dirs(tmp_path: Path) -> "tuple[Path, Path]":
    users = write_service(tmp_path / "users", "users", ["users.create"], ["users.created"])
    web = write_service(tmp_path / "web", "web", ["users.created"], ["users.create"])
    return users, web


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_a_failed_at_least_once_message_comes_again_with_its_attempt(
    nats_env: str, tmp_path: Path, kind: str
) -> None:
    users_dir, web_dir = service_dirs(tmp_path)
    users = Service(users_dir)  # ROLE=users and the NATS settings: the environment
    web = Service(web_dir, role="web")
    assert users.role == "users" and web.role == "web"

    attempts: List[int] = []
    created: List[object] = []
    lock = threading.Lock()

    def handle(payload, ctx):
        with lock:
            attempts.append(ctx.delivery_attempt)
        if ctx.delivery_attempt == 1:
            raise RuntimeError("the first attempt fails")
        ctx.reply("users.created", {"name": payload["name"], "attempt": ctx.delivery_attempt})

    async def handle_async(payload, ctx):
        handle(payload, ctx)

    users.handler("users.create", handle if kind == "def" else handle_async)

    @web.handler("users.created")
    def on_created(payload, ctx):
        with lock:
            created.append(payload)

    with running(users, timeout=20), running(web, timeout=20):
        web.send("users.create", {"name": "ann"})
        assert wait_until(lambda: len(created) >= 1, timeout=15), (
            f"no users.created within 15 s; the handler saw attempts {attempts}"
        )
        # Nothing polls for "no more": give a third attempt (due 2 delays
        # after the second) and a second reply time to show up, bounded.
        time.sleep(REDELIVERY_DELAY_MS * 5 / 1000)
        with lock:
            assert attempts == [1, 2]
            assert created == [{"name": "ann", "attempt": 2}]


def test_delivery_attempt_is_1_on_exocom(tmp_path: Path) -> None:
    with MockBus() as bus:
        service = Service(
            write_service(tmp_path / "svc", "svc", ["ping"], ["pong"]),
            exocom_host=bus.host,
            exocom_port=bus.port,
        )
        service.handler("ping", lambda payload, ctx: ctx.reply("pong", ctx.delivery_attempt))
        with running(service):
            bus.send_to_service("svc", "ping")
            assert bus.wait_for("pong", timeout=5).payload == 1
