"""Python and Rust services over the project's bus (the `exocom` binary)."""

import json
import signal
import subprocess
import sys

from exoservice import Service
from exoservice.testing import running

from conftest import REPO, Proc, binary, free_port, start_exocom

PING_ROUTE = {"receives": ["ping"], "sends": ["pong"]}
CALLER_ROUTE = {"receives": ["pong"], "sends": ["ping"]}


def test_a_python_service_requests_from_the_rust_ping(procs):
    port = start_exocom(procs, {"ping": PING_ROUTE, "caller": CALLER_ROUTE})
    rust = Proc([str(binary("rust-ping"))], {"EXOCOM_HOST": "127.0.0.1", "EXOCOM_PORT": str(port)},
                cwd=REPO / "examples" / "rust-ping")
    procs.append(rust)
    rust.wait_for_line("online at port")
    caller = Service.from_parts("caller", receives=["pong"], sends=["ping"],
                                exocom_host="127.0.0.1", exocom_port=port)
    with running(caller):
        for payload in [{"n": 1, "text": "é"}, [1, 2, 3], None, 2**70]:
            pong = caller.request("ping", payload, timeout=10)
            assert (pong.name, pong.payload) == ("pong", payload)
            assert pong.sender == "ping"


def test_the_rust_exo_client_pings_the_python_example(procs):
    port = start_exocom(procs, {"python-ping": PING_ROUTE, "caller": CALLER_ROUTE})
    example = REPO / "examples" / "python-ping"
    service = Proc([sys.executable, "server.py"],
                   {"EXOCOM_HOST": "127.0.0.1", "EXOCOM_PORT": str(port)}, cwd=example)
    procs.append(service)
    service.wait_for_line("online at port")
    out = subprocess.run(
        [str(binary("exo")), "send", "ping", '{"from":"rust","n":[1,2]}', "--await",
         "--role", "caller", "--host", "127.0.0.1", "--port", str(port), "--timeout", "10"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'pong {"from":"rust","n":[1,2]}'


def test_python_between_two_rust_processes(procs):
    """exo send → Python relay → rust-ping → Python relay → exo send."""
    routes = {
        "ping": PING_ROUTE,
        "relay": {"receives": ["relay.ping", "pong"], "sends": ["ping", "relay.pong"]},
        "caller": {"receives": ["relay.pong"], "sends": ["relay.ping"]},
    }
    port = start_exocom(procs, routes)
    rust = Proc([str(binary("rust-ping"))], {"EXOCOM_HOST": "127.0.0.1", "EXOCOM_PORT": str(port)},
                cwd=REPO / "examples" / "rust-ping")
    procs.append(rust)
    rust.wait_for_line("online at port")
    relay = Service.from_parts("relay", receives=["relay.ping", "pong"], sends=["ping", "relay.pong"],
                               exocom_host="127.0.0.1", exocom_port=port)

    @relay.handler("relay.ping")
    async def forward(payload, ctx):
        pong = await ctx.request("ping", {"via": "python", "inner": payload}, timeout=10)
        ctx.reply("relay.pong", {"rust_said": pong.payload})

    with running(relay):
        out = subprocess.run(
            [str(binary("exo")), "send", "relay.ping", '"hi"', "--await", "--role", "caller",
             "--host", "127.0.0.1", "--port", str(port), "--timeout", "10"],
            capture_output=True, text=True, timeout=30,
        )
    assert out.returncode == 0, out.stderr
    name, _, payload = out.stdout.strip().partition(" ")
    assert name == "relay.pong"
    assert json.loads(payload) == {"rust_said": {"via": "python", "inner": "hi"}}


def test_exo_run_starts_the_python_example(procs, tmp_path):
    """The example's service.yml works for `exo run` (startup command with
    the repository's virtualenv, online text)."""
    (tmp_path / "application.yml").write_text(
        "name: py-app\n"
        "services:\n"
        f"  python-ping:\n    location: {REPO / 'examples' / 'python-ping'}\n"
    )
    port = free_port()
    app = Proc([str(binary("exo")), "run", "--port", str(port), "--quiet-routes"], {}, cwd=tmp_path)
    procs.append(app)
    app.wait_for_line("is online", timeout=60)
    out = subprocess.run(
        [str(binary("exo")), "send", "ping", "[1,2,3]", "--await", "--host", "127.0.0.1",
         "--port", str(port), "--timeout", "10"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr + app.output()
    assert out.stdout.strip() == "pong [1,2,3]"
    app.signal(signal.SIGINT)
    assert app.wait(timeout=30) == 0, app.output()
