"""exoservice.testing.MockBus behaves as documented."""

import socket

import pytest

from exoservice import ConnectionError, ExoError, RequestTimeout, Service
from exoservice.testing import MockBus, running

from conftest import write_service


def test_address_and_env():
    with MockBus() as bus:
        assert bus.host == "127.0.0.1"
        assert bus.port > 0
        assert bus.url == f"ws://127.0.0.1:{bus.port}/services"
        assert bus.env() == {"EXOCOM_HOST": "127.0.0.1", "EXOCOM_PORT": str(bus.port)}
        port = bus.port
    with socket.socket() as s:  # shut down: the port is free again
        s.bind(("127.0.0.1", port))


def test_registrations_are_tracked(bus, tmp_path):
    write_service(tmp_path, "tracked", ["ping"], ["pong"])
    service = Service(tmp_path, exocom_host=bus.host, exocom_port=bus.port)
    assert bus.roles() == []
    with pytest.raises(RequestTimeout):
        bus.wait_for_registration("tracked", timeout=0.1)
    with running(service):
        bus.wait_for_registration("tracked", timeout=5)
        assert bus.roles() == ["tracked"]
        assert bus.instances("tracked") == 1


def test_messages_reach_the_handler_with_every_field(bus, tmp_path):
    write_service(tmp_path, "fields", ["inspect"], ["fields"])
    service = Service(tmp_path, exocom_host=bus.host, exocom_port=bus.port)

    @service.handler("inspect")
    def inspect(payload, ctx):
        m = ctx.message
        ctx.reply("fields", {"name": m.name, "payload": m.payload, "activity": m.activity_id,
                             "sender": m.sender, "auth": m.auth, "security": m.is_security,
                             "has_id": bool(m.id), "has_timestamp": bool(m.timestamp)})

    with running(service):
        sent = bus.send_to_service("fields", "inspect", {"a": 1}, auth=["tok"], is_security=True,
                                   activity_id="act-42", sender="web")
        assert sent.activity_id == "act-42" and sent.id
        reply = bus.wait_for("fields")
    assert reply.payload == {"name": "inspect", "payload": {"a": 1}, "activity": "act-42",
                             "sender": "web", "auth": ["tok"], "security": True,
                             "has_id": True, "has_timestamp": True}
    assert reply.is_security is True
    assert reply.activity_id == "act-42"


def test_wait_for_returns_each_message_once_in_order(bus, tmp_path):
    write_service(tmp_path, "counter", ["count"], ["n"])
    service = Service(tmp_path, exocom_host=bus.host, exocom_port=bus.port)

    @service.handler("count")
    def count(payload, ctx):
        for i in range(payload):
            ctx.send("n", i)

    with running(service):
        bus.send_to_service("counter", "count", 3)
        assert [bus.wait_for("n").payload for _ in range(3)] == [0, 1, 2]
        with pytest.raises(RequestTimeout) as info:
            bus.wait_for("n", timeout=0.1)
        assert isinstance(info.value, ExoError)
        assert [m.payload for m in bus.received()] == [0, 1, 2]
        bus.reset()
        assert bus.received() == []


def test_mock_reply_answers_requests(bus, tmp_path):
    write_service(tmp_path, "asker", ["go"], ["users.get", "done"])
    service = Service(tmp_path, exocom_host=bus.host, exocom_port=bus.port)
    bus.mock_reply("users.get", "users.got", {"name": "Dee"})

    @service.handler("go")
    def go(payload, ctx):
        ctx.reply("done", ctx.request("users.get", {"id": 1}, timeout=1).payload)

    with running(service):
        bus.send_to_service("asker", "go", auth="secret")
        assert bus.wait_for("done").payload == {"name": "Dee"}
        assert bus.wait_for("users.get").auth == "secret"
        bus.reset()  # forgets the automatic reply too
        bus.send_to_service("asker", "go")
        bus.wait_for("users.get")
        with pytest.raises(RequestTimeout):
            bus.wait_for("done", timeout=0.3)


def test_sending_to_a_role_nobody_registered_fails(bus):
    with pytest.raises(ConnectionError) as info:
        bus.send_to_service("nobody", "ping")
    assert "nobody" in str(info.value)


def test_a_shut_down_bus_says_so():
    bus = MockBus()
    bus.shutdown()
    bus.shutdown()
    with pytest.raises(ExoError, match="shut down"):
        bus.received()
