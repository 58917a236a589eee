"""Testing services: a mock bus, and running a service in a thread.

::

    from exoservice import Service
    from exoservice.testing import MockBus, running

    def test_ping():
        with MockBus() as bus:
            service = Service("path/to/service", exocom_host=bus.host, exocom_port=bus.port)
            service.handler("ping", lambda payload, ctx: ctx.reply("pong", payload))
            with running(service):
                sent = bus.send_to_service(service.role, "ping", {"n": 1})
                pong = bus.wait_for("pong")
                assert pong.payload == {"n": 1}
                assert pong.activity_id == sent.activity_id

A service under test may also run in a subprocess: give it ``bus.env()``
(``EXOCOM_HOST`` and ``EXOCOM_PORT``) and wait with
:meth:`MockBus.wait_for_registration`.
"""

from __future__ import annotations

import contextlib
import threading
from types import TracebackType
from typing import Any, Dict, Iterator, List, Optional, Type

from . import _native
from .errors import ExoError
from .message import Message, Payload
from .service import Service

__all__ = ["MockBus", "running"]


class MockBus:
    """A mock ExoCom listening on 127.0.0.1 (a free port unless ``port`` is
    given), speaking the real transport.

    It routes nothing: it records every message a service sends it
    (:meth:`received`, :meth:`wait_for`), knows which roles registered
    (:meth:`roles`), and sends a service whatever the test asks
    (:meth:`send_to_service`). Every wait has a timeout and raises
    :class:`~exoservice.RequestTimeout` when it passes. Use it as a context
    manager, or call :meth:`shutdown`.
    """

    #: The address it listens on.
    host = "127.0.0.1"

    def __init__(self, port: int = 0) -> None:
        self._native = _native.NativeMockBus(port)

    @property
    def port(self) -> int:
        """The port it listens on (the service's ``EXOCOM_PORT``)."""
        return self._native.port

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT/services``."""
        return f"ws://{self.host}:{self.port}/services"

    def env(self) -> Dict[str, str]:
        """``EXOCOM_HOST`` and ``EXOCOM_PORT`` for a service in a subprocess."""
        return {"EXOCOM_HOST": self.host, "EXOCOM_PORT": str(self.port)}

    def roles(self) -> List[str]:
        """The roles registered and still connected, sorted, each once."""
        return self._native.roles()

    def instances(self, role: str) -> int:
        """How many connections are registered as ``role`` now."""
        return self._native.instances(role)

    def wait_for_registration(self, role: str, timeout: float = 5.0) -> None:
        """Waits until a service registered as ``role`` is connected."""
        self._native.wait_for_registration(role, timeout)

    def send_to_service(
        self,
        role: str,
        name: str,
        payload: Payload = None,
        *,
        auth: Any = None,
        is_security: bool = False,
        activity_id: Optional[str] = None,
        sender: Optional[str] = None,
    ) -> Message:
        """Sends a message (fresh ``id``, and a fresh ``activityId`` unless
        given) to the service registered as ``role`` (the one that
        registered last, if several), and returns it as sent, so that the
        answer can be matched by ``activity_id``. Waits up to 5 seconds for
        the role to register; then raises :class:`~exoservice.ConnectionError`."""
        return Message._from_native(
            self._native.send_message(
                role, name, payload, auth, is_security, activity_id, sender
            )
        )

    def wait_for(self, name: str, timeout: float = 5.0) -> Message:
        """The first message named ``name`` that the bus received and that
        no earlier ``wait_for`` returned, waiting for it at most ``timeout``
        seconds. Two calls return two different messages, in arrival order."""
        return Message._from_native(self._native.wait_for(name, timeout))

    def received(self) -> List[Message]:
        """Every message received since the start or the last :meth:`reset`,
        in arrival order (registrations are not messages)."""
        return [Message._from_native(t) for t in self._native.received()]

    def mock_reply(self, request_name: str, reply_name: str, payload: Payload = None) -> None:
        """From now on, answers every ``request_name`` a service sends at
        once with ``reply_name`` and ``payload``, in the request's activity
        (so a service's ``request`` gets it)."""
        self._native.mock_reply(request_name, reply_name, payload)

    def reset(self) -> None:
        """Forgets the received messages and the automatic replies."""
        self._native.reset()

    def shutdown(self) -> None:
        """Stops the bus like a killed one; returns once the port is free."""
        self._native.shutdown()

    def __enter__(self) -> "MockBus":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<MockBus {self.url}>"


@contextlib.contextmanager
def running(service: Service, timeout: float = 10.0) -> Iterator[Service]:
    """Runs ``service`` on a background thread until the ``with`` block
    ends, then stops it and waits for its drain. Entering waits until the
    service registered with its bus (at most ``timeout`` seconds); an error
    of the service (a failing before-all hook, say) is raised here."""
    errors: List[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as e:  # handed to the test's thread
            errors.append(e)

    thread = threading.Thread(target=run, name=f"exoservice-{service.role}", daemon=True)
    thread.start()
    try:
        if not service.wait_online(timeout):
            thread.join(1.0)
            if errors:
                raise errors[0]
            raise ExoError(
                f"the service '{service.role}' did not register with "
                f"{service.exocom_host}:{service.exocom_port} within {timeout}s"
            )
        yield service
    finally:
        service.stop()
        thread.join(timeout + 30.0)
    if thread.is_alive():
        raise ExoError(f"the service '{service.role}' did not stop")
    if errors:
        raise errors[0]
