"""The message envelope as handlers, requests and the mock bus see it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

__all__ = ["Message", "Payload"]

#: A payload: ``dict`` (with ``str`` keys), ``list``, ``str``, ``int``,
#: ``float``, ``bool`` or ``None``, nested in any way.
Payload = Any


@dataclass(frozen=True)
class Message:
    """One ExoCom message.

    ``payload`` and ``auth`` are plain Python values (``None`` when the
    message has none). ``sender`` is the sending role as the bus forwards it
    (the Go ExoCom forwards none); ``timestamp`` and ``response_time``
    (nanoseconds since the previous message of the activity) are set by the
    bus.
    """

    name: str
    payload: Payload = None
    activity_id: Optional[str] = None
    id: Optional[str] = None
    sender: Optional[str] = None
    auth: Any = None
    is_security: bool = False
    timestamp: Optional[str] = None
    response_time: Optional[int] = None

    @classmethod
    def _from_native(cls, t: Tuple[Any, ...]) -> "Message":
        return cls(*t)
