"""A service in a subprocess: SIGINT / SIGTERM drain it and it exits 0."""

import signal
import textwrap

import pytest

from conftest import SIGNALS, start_python, write_service

SYNC = """
    import os, time
    from exoservice import Service

    service = Service(os.environ["SERVICE_DIR"])

    @service.handler("work")
    def work(payload, ctx):
        ctx.send("started")
        time.sleep(payload["seconds"])
        ctx.reply("done", payload)

    service.run()
    print("run returned", flush=True)
"""

ASYNC = """
    import asyncio, os
    from exoservice import Service

    service = Service(os.environ["SERVICE_DIR"])

    @service.handler("work")
    async def work(payload, ctx):
        ctx.send("started")
        await asyncio.sleep(payload["seconds"])
        ctx.reply("done", payload)

    service.run()
    print("run returned", flush=True)
"""


def start_worker(procs, bus, tmp_path, code, env=None):
    service_dir = write_service(tmp_path / "svc", "busy-worker", ["work"], ["started", "done"])
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(code))
    p = start_python(procs, script, {**bus.env(), "SERVICE_DIR": str(service_dir), **(env or {})})
    p.wait_for_line("online at port")
    return p


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("code", [SYNC, ASYNC], ids=["sync", "async"])
def test_a_signal_drains_the_running_handler_and_exits_0(bus, procs, tmp_path, sig, code):
    p = start_worker(procs, bus, tmp_path, code, {"EXOSERVICE_DRAIN_TIMEOUT_MS": "20000"})
    sent = bus.send_to_service("busy-worker", "work", {"seconds": 1.0})
    bus.wait_for("started")
    p.signal(sig)
    assert p.wait(timeout=20) == 0, p.output()
    done = bus.wait_for("done", timeout=1)
    assert done.activity_id == sent.activity_id
    assert "run returned" in "".join(p.stdout)
    assert f"{sig.name}: stopping" in "".join(p.stderr)
    assert bus.instances("busy-worker") == 0


@pytest.mark.parametrize("code", [SYNC, ASYNC], ids=["sync", "async"])
def test_a_handler_past_the_drain_deadline_is_cut_short(bus, procs, tmp_path, code):
    p = start_worker(procs, bus, tmp_path, code, {"EXOSERVICE_DRAIN_TIMEOUT_MS": "500"})
    bus.send_to_service("busy-worker", "work", {"seconds": 60})
    bus.wait_for("started")
    p.signal(signal.SIGINT)
    # Well before the handler's 60 s: the drain deadline ends it.
    assert p.wait(timeout=20) == 0, p.output()
    assert "run returned" in "".join(p.stdout)
    err = "".join(p.stderr)
    assert "cut short" in err or "was cancelled" in err, err
    assert [m.name for m in bus.received()] == ["started"]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("code", [SYNC, ASYNC], ids=["sync", "async"])
def test_a_second_signal_quits_at_once(bus, procs, tmp_path, code, sig):
    p = start_worker(procs, bus, tmp_path, code, {"EXOSERVICE_DRAIN_TIMEOUT_MS": "60000"})
    bus.send_to_service("busy-worker", "work", {"seconds": 60})
    bus.wait_for("started")
    p.signal(sig)
    p.wait_for_line(f"{sig.name}: stopping")
    p.signal(sig)
    code = p.wait(timeout=20)
    assert code != 0, p.output()
    assert "run returned" not in "".join(p.stdout)
    err = "".join(p.stderr)
    assert "quitting without draining" in err or "KeyboardInterrupt" in err, err


def test_bootstrap_runs_a_service_from_a_mapping(bus, procs, tmp_path):
    service_dir = write_service(tmp_path / "svc", "boot", ["ping"], ["pong"])
    script = tmp_path / "boot.py"
    script.write_text(textwrap.dedent("""
        import os, exoservice

        state = {}

        def before_all():
            state["ready"] = True

        exoservice.bootstrap(
            {
                "beforeAll": before_all,
                "ping": lambda payload, ctx: ctx.reply("pong", {"ready": state["ready"], "echo": payload}),
            },
            dir=os.environ["SERVICE_DIR"],
        )
    """))
    p = start_python(procs, script, {**bus.env(), "SERVICE_DIR": str(service_dir)})
    p.wait_for_line("online at port")
    bus.send_to_service("boot", "ping", 3)
    assert bus.wait_for("pong").payload == {"ready": True, "echo": 3}
    p.signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 0, p.output()
