"""The exceptions of exoservice.

Every error the framework raises at a call site is an :class:`ExoError`
(except bad payloads, which are :class:`TypeError`, and bad arguments,
which are :class:`ValueError`). Attributes carry the details that the
message text names.
"""

from __future__ import annotations

import builtins
from typing import Any, Optional

__all__ = [
    "ExoError",
    "ConfigError",
    "UndeclaredMessageError",
    "RequestTimeout",
    "BufferFullError",
    "ConnectionError",
    "UsageError",
    "ServiceStopped",
]


class ExoError(Exception):
    """Base class of every exoservice error."""

    def __init__(self, text: str, **attrs: Any) -> None:
        super().__init__(text)
        for key, value in attrs.items():
            setattr(self, key, value)


class ConfigError(ExoError):
    """The service's configuration cannot be used.

    ``str(error)`` reads ``file:line:column: message``; the parts are in
    :attr:`file`, :attr:`line`, :attr:`column` (``None`` when the error has
    no place in the file, like a missing file or a bad environment variable,
    whose "file" is then ``$NAME``) and :attr:`message`.
    """

    file: str = ""
    line: Optional[int] = None
    column: Optional[int] = None
    message: str = ""


class UndeclaredMessageError(ExoError):
    """A message name the config does not declare.

    Sending (``reply``, ``send``, ``request``) a name that is not under
    ``sends`` raises it at the call site (``direction == "sends"``); a
    handler for a name not under ``receives`` raises it when the handler is
    registered (``direction == "receives"``).
    """

    name: str = ""
    role: str = ""
    file: str = ""
    direction: str = ""


class RequestTimeout(ExoError, builtins.TimeoutError):
    """A request got no answer within its timeout (also a ``TimeoutError``)."""

    name: str = ""
    timeout: float = 0.0


class BufferFullError(ExoError):
    """The outgoing buffer is full: the bus has been away (or too slow) for
    longer than the buffer holds (``capacity`` messages)."""

    name: str = ""
    capacity: int = 0


class ConnectionError(ExoError, builtins.ConnectionError):
    """The bus cannot be reached (also a built-in ``ConnectionError``)."""


class UsageError(ExoError):
    """The API was used in a way that cannot work (the text says how):
    a second handler for one name, registering after the start, ..."""

    name: Optional[str] = None


class ServiceStopped(ExoError):
    """The service is stopped and takes no more work."""
