"""Log output: the core's log events go to Python's ``logging``.

Every record is logged under the logger ``exoservice`` or one of its
children (``exoservice.relay``, ``exoservice.dispatch``, ...). The level of
``exoservice`` decides what the core forwards; it is read whenever a
service is created or started (call :func:`sync_log_level` after changing
it at another time).
"""

from __future__ import annotations

import atexit
import logging

from . import _native

__all__ = ["LOGGER_NAME", "logger", "sync_log_level", "ensure_handler"]

LOGGER_NAME = "exoservice"
logger = logging.getLogger(LOGGER_NAME)

_installed = False


def sync_log_level() -> None:
    """Starts forwarding the core's log events (once) and makes it follow
    the current effective level of the ``exoservice`` logger."""
    global _installed
    level = logger.getEffectiveLevel()
    if _installed:
        _native.set_log_level(level)
        return
    _native.install_logging(level)
    atexit.register(_native.shutdown_logging)
    _installed = True


def ensure_handler() -> None:
    """Gives the ``exoservice`` logger a stderr handler at INFO when the
    program configured no logging at all (no handler on it or on the root
    logger), so a service started from a plain script shows what it does.
    Any logging configuration of the program wins."""
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
