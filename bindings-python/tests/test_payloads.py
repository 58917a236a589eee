"""Payloads: plain Python values in, the same values out; anything else is
a TypeError at the call site."""

import json
import math
from collections import OrderedDict
from enum import IntEnum

import pytest

from exoservice import Service, _native
from exoservice.testing import running

from conftest import write_service


class Level(IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        2**63 - 1,
        2**64 - 1,
        -(2**63),
        2**100,
        -(2**100),
        1.5,
        -0.25,
        1e300,
        "",
        "plain",
        'quote " backslash \\ newline \n tab \t nul \x00 bell \x07',
        "unicode é 漢字 🎉",
        [],
        {},
        [1, "two", 3.0, None, [True], {"k": []}],
        {"nested": {"deep": [{"x": 1}]}, "": "empty key"},
        OrderedDict([("b", 1), ("a", 2)]),
    ],
)
def test_plain_values_are_written_as_json(value):
    text = _native.encode_payload(value)
    assert json.loads(text) == value


def test_int_subclasses_are_numbers():
    assert _native.encode_payload({"level": Level.HIGH}) == '{"level":3}'
    assert json.loads(_native.encode_payload(True)) is True


@pytest.mark.parametrize(
    "value, where, what",
    [
        ({1, 2}, "payload", "set"),
        ((1, 2), "payload", "tuple"),
        (b"bytes", "payload", "bytes"),
        (object(), "payload", "object"),
        ({"a": [1, {"b": {1j}}]}, "payload['a'][1]['b']", "set"),
        ({"a": 1.0j}, "payload['a']", "complex"),
        ([1, 2, float("nan")], "payload[2]", "NaN"),
        ({"x": math.inf}, "payload['x']", "inf"),
        ({1: "int key"}, "payload", "keys must be str"),
        ({"s": "lone \udc80 surrogate"}, "payload['s']", "surrogate"),
    ],
)
def test_anything_else_is_a_type_error_naming_the_place(value, where, what):
    with pytest.raises(TypeError) as info:
        _native.encode_payload(value)
    text = str(info.value)
    assert where in text, text
    assert what in text, text


def test_a_payload_that_contains_itself_is_refused():
    loop = []
    loop.append(loop)
    with pytest.raises(TypeError, match="deeper"):
        _native.encode_payload(loop)


def test_payloads_round_trip_through_a_service(bus, tmp_path):
    write_service(tmp_path, "echo", ["echo"], ["echoed"])
    service = Service(tmp_path, exocom_host=bus.host, exocom_port=bus.port)

    @service.handler("echo")
    def echo(payload, ctx):
        ctx.reply("echoed", {"got": payload, "type": type(payload).__name__})

    values = [None, 0, 2**80, -1.5, "é\n\"", [1, [2, [3]]], {"a": {"b": None}}, True]
    with running(service):
        for value in values:
            sent = bus.send_to_service("echo", "echo", value)
            answer = bus.wait_for("echoed")
            assert answer.activity_id == sent.activity_id
            assert answer.payload["got"] == value
            assert answer.payload["type"] == type(value).__name__


def test_a_bad_payload_raises_in_the_handler_and_nothing_is_sent(bus, tmp_path):
    write_service(tmp_path, "bad", ["go"], ["out", "error"])
    service = Service(tmp_path, exocom_host=bus.host, exocom_port=bus.port)

    @service.handler("go")
    def go(payload, ctx):
        try:
            ctx.reply("out", {"when": object()})
        except TypeError as e:
            ctx.reply("error", {"text": str(e)})

    with running(service):
        bus.send_to_service("bad", "go")
        error = bus.wait_for("error")
        assert "payload['when']" in error.payload["text"]
        assert "cannot send 'out'" in error.payload["text"]
        assert [m.name for m in bus.received()] == ["error"]
