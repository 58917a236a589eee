"""exoservice: micro-services made of a config file and plain handler
functions, talking over ExoCom, the message bus of the Exosphere system.

::

    from exoservice import Service

    service = Service()                       # ./service.yml + environment

    @service.handler("ping")
    def ping(payload, ctx):
        ctx.reply("pong", payload)

    service.run()                             # until Ctrl-C / SIGTERM, then drain

The framework (connection, registration, dispatch, requests, buffering,
draining) is the Rust core of exoservice; this package is its Python API.
"""

from . import _native
from ._logging import sync_log_level
from .errors import (
    BufferFullError,
    ConfigError,
    ConnectionError,
    ExoError,
    RequestTimeout,
    ServiceStopped,
    UndeclaredMessageError,
    UsageError,
)
from .message import Message, Payload
from .service import (
    DEFAULT_REQUEST_TIMEOUT,
    AsyncContext,
    Context,
    Service,
    bootstrap,
)

__version__: str = _native.__version__

__all__ = [
    "AsyncContext",
    "BufferFullError",
    "ConfigError",
    "ConnectionError",
    "Context",
    "DEFAULT_REQUEST_TIMEOUT",
    "ExoError",
    "Message",
    "Payload",
    "RequestTimeout",
    "Service",
    "ServiceStopped",
    "UndeclaredMessageError",
    "UsageError",
    "bootstrap",
    "sync_log_level",
]
