"""run_async inside a program's own event loop."""

import asyncio
import threading

import pytest

from exoservice import Service, ServiceStopped

from conftest import write_service


def run_loop_in_thread(coro_factory):
    """Runs asyncio.run(coro_factory()) on a thread; returns (thread, box)."""
    box = {}

    def target():
        try:
            box["result"] = asyncio.run(coro_factory())
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def test_run_async_next_to_other_tasks(bus, tmp_path):
    write_service(tmp_path, "app", ["ping"], ["pong", "tick"])
    service = Service(tmp_path, exocom_host=bus.host, exocom_port=bus.port)
    ticks = []

    @service.handler("ping")
    async def ping(payload, ctx):
        ctx.reply("pong", {"ticks": len(ticks) > 0, "payload": payload})

    async def ticker():
        while True:
            ticks.append(1)
            await asyncio.sleep(0.01)

    async def main():
        task = asyncio.ensure_future(ticker())
        try:
            await service.run_async()
        finally:
            task.cancel()
        return "returned"

    t, box = run_loop_in_thread(main)
    assert service.wait_online(10)
    bus.send_to_service("app", "ping", "x")
    pong = bus.wait_for("pong")
    assert pong.payload == {"ticks": True, "payload": "x"}
    service.stop()
    t.join(15)
    assert box == {"result": "returned"}


def test_cancelling_run_async_drains_and_cancels(bus, tmp_path):
    write_service(tmp_path, "app", ["work"], ["started", "done"])
    service = Service(tmp_path, exocom_host=bus.host, exocom_port=bus.port)
    release = None

    @service.handler("work")
    async def work(payload, ctx):
        ctx.send("started")
        await release.wait()
        ctx.reply("done", payload)

    state = {}

    async def main():
        nonlocal release
        release = asyncio.Event()
        state["loop"] = asyncio.get_running_loop()
        runner = asyncio.ensure_future(service.run_async(handle_signals=False))
        state["runner"] = runner
        try:
            await runner
        except asyncio.CancelledError:
            return "cancelled"
        return "not cancelled"

    t, box = run_loop_in_thread(main)
    assert service.wait_online(10)
    bus.send_to_service("app", "work", 5)
    bus.wait_for("started")
    loop = state["loop"]
    loop.call_soon_threadsafe(state["runner"].cancel)
    # The running handler still finishes (the drain waits for it).
    loop.call_soon_threadsafe(release.set)
    assert bus.wait_for("done").payload == 5
    t.join(15)
    assert box == {"result": "cancelled"}
    assert bus.instances("app") == 0, "the service left the bus"


def test_pending_requests_fail_when_the_service_stops(bus, tmp_path):
    write_service(tmp_path, "app", [], ["question"])
    service = Service(tmp_path, exocom_host=bus.host, exocom_port=bus.port)

    async def main():
        runner = asyncio.ensure_future(service.run_async(handle_signals=False))
        while not service.connected:
            await asyncio.sleep(0.01)
        ask = asyncio.ensure_future(service.request_async("question", None, timeout=30))
        await asyncio.sleep(0.05)
        service.stop()
        await runner
        with pytest.raises(ServiceStopped):
            await ask
        return "ok"

    t, box = run_loop_in_thread(main)
    t.join(20)
    assert box == {"result": "ok"}
