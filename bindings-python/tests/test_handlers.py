"""Handlers against the mock bus, in this process: reply, send, request,
timeouts, errors, before-all hooks, logging."""

import asyncio
import logging
import threading
import time

import pytest

import exoservice
from exoservice import (
    AsyncContext,
    Context,
    Message,
    RequestTimeout,
    Service,
    UndeclaredMessageError,
    UsageError,
)
from exoservice.testing import running

from conftest import write_service


@pytest.fixture
def make(bus, tmp_path):
    """A service on the mock bus from a role and its message names."""

    def make(role="svc", receives=(), sends=()):
        write_service(tmp_path / role, role, receives, sends)
        return Service(tmp_path / role, exocom_host=bus.host, exocom_port=bus.port)

    return make


def test_sync_handler_replies_in_the_activity_with_auth(bus, make):
    service = make("ping", ["ping"], ["pong"])
    seen = []

    @service.handler("ping")
    def ping(payload, ctx):
        seen.append((type(ctx), ctx.name, ctx.activity_id, ctx.auth, ctx.message.sender))
        ctx.reply("pong", {"echo": payload})

    with running(service):
        sent = bus.send_to_service("ping", "ping", {"n": 1}, auth={"user": "ann"}, sender="web")
        pong = bus.wait_for("pong")
    assert pong.payload == {"echo": {"n": 1}}
    assert pong.activity_id == sent.activity_id
    assert pong.auth == {"user": "ann"}
    assert pong.sender == "ping"
    assert seen == [(Context, "ping", sent.activity_id, {"user": "ann"}, "web")]


def test_send_starts_a_new_activity_and_carries_auth(bus, make):
    service = make("todo", ["todo.add"], ["todo.added", "audit"])

    @service.handler("todo.add")
    def add(payload, ctx):
        ctx.send("audit", {"added": payload["text"]})
        ctx.reply("todo.added", payload)

    with running(service):
        sent = bus.send_to_service("todo", "todo.add", {"text": "milk"}, auth="token-1")
        audit = bus.wait_for("audit")
        added = bus.wait_for("todo.added")
    assert audit.payload == {"added": "milk"}
    assert audit.activity_id != sent.activity_id
    assert audit.auth == "token-1"
    assert added.activity_id == sent.activity_id


def test_async_handler_on_asyncio(bus, make):
    service = make("apong", ["ping"], ["pong"])
    seen = []

    @service.handler("ping")
    async def ping(payload, ctx):
        seen.append(type(ctx))
        await asyncio.sleep(0)
        ctx.reply("pong", payload)

    with running(service):
        sent = bus.send_to_service("apong", "ping", [1, 2])
        pong = bus.wait_for("pong")
    assert (pong.payload, pong.activity_id) == ([1, 2], sent.activity_id)
    assert seen == [AsyncContext]


def test_sync_request_returns_the_answer_message(bus, make):
    service = make("todo", ["todo.add"], ["users.get", "todo.added"])
    bus.mock_reply("users.get", "users.got", {"id": 7, "name": "Ann"})

    @service.handler("todo.add")
    def add(payload, ctx):
        user = ctx.request("users.get", {"id": payload["owner"]}, timeout=5)
        assert isinstance(user, Message)
        ctx.reply("todo.added", {"owner": user.payload["name"], "answer": user.name})

    with running(service):
        sent = bus.send_to_service("todo", "todo.add", {"owner": 7}, auth="tok")
        added = bus.wait_for("todo.added")
        request = bus.wait_for("users.get")
    assert added.payload == {"owner": "Ann", "answer": "users.got"}
    assert added.activity_id == sent.activity_id
    assert request.payload == {"id": 7}
    assert request.auth == "tok"
    assert request.activity_id != sent.activity_id


def test_async_request_is_awaited(bus, make):
    service = make("todo", ["todo.add"], ["users.get", "todo.added"])
    bus.mock_reply("users.get", "users.got", {"name": "Bob"})

    @service.handler("todo.add")
    async def add(payload, ctx):
        user = await ctx.request("users.get", {"id": payload["owner"]}, timeout=5.0)
        ctx.reply("todo.added", {"owner": user.payload["name"]})

    with running(service):
        bus.send_to_service("todo", "todo.add", {"owner": 1})
        assert bus.wait_for("todo.added").payload == {"owner": "Bob"}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_request_timeout(bus, make, kind):
    service = make("asker", ["go"], ["question", "result"])

    if kind == "sync":

        @service.handler("go")
        def go(payload, ctx):
            try:
                ctx.request("question", None, timeout=0.2)
            except RequestTimeout as e:
                ctx.reply("result", {"error": type(e).__name__, "name": e.name,
                                     "timeout": e.timeout, "builtin": isinstance(e, TimeoutError)})

    else:

        @service.handler("go")
        async def go(payload, ctx):
            try:
                await ctx.request("question", None, timeout=0.2)
            except RequestTimeout as e:
                ctx.reply("result", {"error": type(e).__name__, "name": e.name,
                                     "timeout": e.timeout, "builtin": isinstance(e, TimeoutError)})

    with running(service):
        bus.send_to_service("asker", "go")
        result = bus.wait_for("result")
    assert result.payload == {"error": "RequestTimeout", "name": "question", "timeout": 0.2, "builtin": True}


def test_async_handlers_run_concurrently(bus, make):
    """A handler waiting for an answer does not hold up the next one."""
    service = make("conc", ["slow", "fast"], ["question", "done"])

    @service.handler("slow")
    async def slow(payload, ctx):
        answer = await ctx.request("question", None, timeout=10)
        ctx.reply("done", {"which": "slow", "answer": answer.payload})

    @service.handler("fast")
    async def fast(payload, ctx):
        ctx.reply("done", {"which": "fast"})

    with running(service):
        bus.send_to_service("conc", "slow")
        question = bus.wait_for("question")
        bus.send_to_service("conc", "fast")
        assert bus.wait_for("done").payload == {"which": "fast"}
        bus.send_to_service("conc", "answer", 42, activity_id=question.activity_id)
        assert bus.wait_for("done").payload == {"which": "slow", "answer": 42}


def test_undeclared_names_raise_at_the_call_site(bus, make):
    service = make("strict", ["go"], ["ok"])

    @service.handler("go")
    def go(payload, ctx):
        errors = []
        for call in (lambda: ctx.reply("nope"), lambda: ctx.send("nope"),
                     lambda: ctx.request("nope", timeout=1)):
            try:
                call()
            except UndeclaredMessageError as e:
                errors.append([e.name, e.direction, e.role])
        ctx.reply("ok", errors)

    with running(service):
        bus.send_to_service("strict", "go")
        ok = bus.wait_for("ok")
    assert ok.payload == [["nope", "sends", "strict"]] * 3
    assert [m.name for m in bus.received()] == ["ok"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_failing_handler_is_logged_with_its_traceback_and_the_service_goes_on(bus, make, caplog, kind):
    service = make("fragile", ["ping"], ["pong"])

    def body(payload, ctx):
        if payload == "boom":
            raise ValueError("kaboom in the handler")
        ctx.reply("pong", payload)

    if kind == "sync":
        service.handler("ping", body)
    else:

        async def abody(payload, ctx):
            body(payload, ctx)

        service.handler("ping", abody)

    with caplog.at_level(logging.ERROR, logger="exoservice"), running(service):
        boom = bus.send_to_service("fragile", "ping", "boom")
        bus.send_to_service("fragile", "ping", "after")
        assert bus.wait_for("pong").payload == "after"
    failures = [r for r in caplog.records if r.name == "exoservice" and r.levelno == logging.ERROR]
    assert len(failures) == 1, caplog.text
    record = failures[0]
    assert "handler for 'ping'" in record.getMessage()
    assert boom.activity_id in record.getMessage()
    assert record.exc_info and record.exc_info[0] is ValueError
    assert "kaboom in the handler" in caplog.text
    assert "Traceback" in caplog.text


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_before_all_hooks_run_in_order_before_registration(bus, make, kind):
    service = make("hooked", ["ping"], ["pong"])
    order = []

    def first():
        order.append(("first", bus.roles()))

    service.before_all(first)

    if kind == "sync":

        @service.before_all
        def second():
            time.sleep(0.2)  # registration would have happened meanwhile
            order.append(("second", bus.roles()))

    else:

        @service.before_all
        async def second():
            await asyncio.sleep(0.2)
            order.append(("second", bus.roles()))

    @service.handler("ping")
    def ping(payload, ctx):
        ctx.reply("pong", [name for name, _ in order])

    with running(service):
        bus.send_to_service("hooked", "ping")
        assert bus.wait_for("pong").payload == ["first", "second"]
    assert order == [("first", []), ("second", [])]


def test_a_failing_before_all_hook_stops_the_start(bus, make):
    service = make("nohook", ["ping"], ["pong"])

    @service.before_all
    def fail():
        raise RuntimeError("no database")

    with pytest.raises(RuntimeError, match="no database"):
        with running(service, timeout=5):
            pass
    assert bus.roles() == []


def test_the_service_sends_and_requests_outside_handlers(bus, make):
    service = make("client", [], ["hello", "users.get"])
    bus.mock_reply("users.get", "users.got", {"name": "Cy"})
    with running(service):
        service.send("hello", {"from": "outside"})
        assert bus.wait_for("hello").payload == {"from": "outside"}
        answer = service.request("users.get", {"id": 3}, timeout=5)
        assert (answer.name, answer.payload) == ("users.got", {"name": "Cy"})

        async def ask():
            return await service.request_async("users.get", None, timeout=5)

        assert asyncio.run(ask()).payload == {"name": "Cy"}


def test_requests_and_sends_outside_handlers_carry_auth(bus, make):
    service = make("client", [], ["hello", "users.get"])
    bus.mock_reply("users.get", "users.got", {"name": "Cy"})
    auth = {"token": "t-1", "scopes": ["r", "w"], "n": 2**53}
    with running(service):
        service.send("hello", None, auth=auth)
        assert bus.wait_for("hello").auth == auth
        answer = service.request("users.get", {"id": 3}, timeout=5, auth=auth)
        assert bus.wait_for("users.get").auth == auth
        assert (answer.name, answer.auth) == ("users.got", auth)

        async def ask():
            return await service.request_async("users.get", None, timeout=5, auth="plain")

        assert asyncio.run(ask()).auth == "plain"
        assert service.request("users.get", None, timeout=5).auth is None
        with pytest.raises(TypeError, match=r"auth\['bad'\] is of type 'set'"):
            service.request("users.get", None, timeout=5, auth={"bad": {1}})


def test_a_service_runs_once(bus, make):
    service = make("once", ["ping"], ["pong"])
    with running(service):
        with pytest.raises(UsageError, match="already started"):
            service.handler("ping", lambda p, c: None)
    with pytest.raises(UsageError, match="runs once"):
        service.run()


def test_core_log_events_go_to_python_logging(bus, make, caplog):
    service = make("quiet", ["ping", "unhandled"], ["pong"])
    service.handler("ping", lambda p, ctx: ctx.reply("pong"))
    with caplog.at_level(logging.WARNING, logger="exoservice"), running(service):
        exoservice.sync_log_level()
        sent = bus.send_to_service("quiet", "unhandled", {"x": 1})
        bus.send_to_service("quiet", "ping")
        bus.wait_for("pong")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "no handler" not in caplog.text:
            exoservice._native.flush_logs(1.0)
            time.sleep(0.05)
    records = [r for r in caplog.records if "no handler" in r.getMessage()]
    assert records, caplog.text
    assert records[0].name.startswith("exoservice")
    assert records[0].levelno == logging.WARNING
    assert sent.activity_id in records[0].getMessage()


def test_stop_from_another_thread_drains_a_running_handler(bus, make):
    service = make("slowpoke", ["work"], ["started", "done"])
    release = threading.Event()

    @service.handler("work")
    def work(payload, ctx):
        ctx.send("started")
        release.wait(10)
        ctx.reply("done", payload)

    thread_errors = []

    def run():
        try:
            service.run()
        except BaseException as e:
            thread_errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert service.wait_online(10)
    bus.send_to_service("slowpoke", "work", 1)
    bus.wait_for("started")
    service.stop()
    time.sleep(0.2)
    assert t.is_alive(), "the service waits for its running handler"
    release.set()
    t.join(15)
    assert not t.is_alive() and not thread_errors
    assert bus.wait_for("done").payload == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_failing_handlers_are_counted_in_the_service_metrics(bus, make, monkeypatch, kind):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("EXOSERVICE_METRICS_PORT", str(port))
    service = make("counted", ["ping"], ["pong"])

    def body(payload, ctx):
        if payload == "boom":
            raise ValueError("kaboom")
        ctx.reply("pong", payload)

    if kind == "sync":
        service.handler("ping", body)
    else:

        async def abody(payload, ctx):
            body(payload, ctx)

        service.handler("ping", abody)

    with running(service):
        bus.send_to_service("counted", "ping", "boom")
        bus.send_to_service("counted", "ping", "after")
        assert bus.wait_for("pong").payload == "after"
        deadline = time.monotonic() + 5
        while True:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            if 'exoservice_messages_handled_total{message="ping"} 2' in text or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert 'exoservice_handler_errors_total{message="ping"} 1' in text, text
