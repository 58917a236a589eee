"""Services: a config file plus handler functions, one per message name."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import signal
import threading
import time
from types import FrameType
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    TypeVar,
    Union,
    overload,
)

from . import _logging, _native
from .errors import ServiceStopped, UsageError
from .message import Message, Payload

if TYPE_CHECKING:
    PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "AsyncContext",
    "Context",
    "Service",
    "bootstrap",
]

#: Seconds a request waits for its answer unless told otherwise.
DEFAULT_REQUEST_TIMEOUT = 5.0

log = _logging.logger

F = TypeVar("F", bound=Callable[..., Any])


class _BaseContext:
    """What a handler gets besides the payload."""

    __slots__ = ("_d", "_service", "_message")

    def __init__(self, delivery: _native.NativeDelivery, service: "Service") -> None:
        self._d = delivery
        self._service = service
        self._message: Optional[Message] = None

    @property
    def name(self) -> str:
        """The name of the message being handled."""
        return self._d.name

    @property
    def activity_id(self) -> str:
        """The activity of the message being handled (replies carry it)."""
        return self._d.activity_id

    @property
    def delivery_attempt(self) -> int:
        """Which attempt at this message the handler is: 1 for a first
        delivery, 2 and more when an at-least-once message comes again after
        a failed handler (raised) or an instance that died (on NATS; always
        1 on ExoCom)."""
        return self._d.delivery_attempt

    @property
    def auth(self) -> Any:
        """The message's ``auth`` (opaque credentials), ``None`` if absent.
        Replies, sends and requests from this handler carry it on."""
        return self._d.auth

    @property
    def message(self) -> Message:
        """The whole incoming message (sender, id, timestamp, ...)."""
        if self._message is None:
            self._message = Message._from_native(self._d.message())
        return self._message

    @property
    def service(self) -> "Service":
        """The service running this handler."""
        return self._service

    def reply(self, name: str, payload: Payload = None) -> None:
        """Answers the message being handled: a message named ``name`` in the
        same activity, with the same ``auth`` and ``isSecurity``.

        ``name`` must be declared under ``sends`` (else
        :class:`~exoservice.UndeclaredMessageError`); a payload that is not
        plain JSON-like data raises ``TypeError``; a full outgoing buffer
        raises :class:`~exoservice.BufferFullError`.
        """
        self._d.reply(name, payload)

    def send(self, name: str, payload: Payload = None) -> None:
        """Sends a message in a new activity, carrying this message's
        ``auth``. Errors as for :meth:`reply`."""
        self._d.send(name, payload)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} activity={self.activity_id!r}>"


class Context(_BaseContext):
    """The context of a plain (``def``) handler: ``request`` blocks."""

    __slots__ = ()

    def request(
        self,
        name: str,
        payload: Payload = None,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> Message:
        """Sends ``name`` (carrying this message's ``auth``) and blocks until
        the first message of its activity arrives, which it returns (that
        message does not also go to a handler). Check ``.name`` for the
        outcome (``users.created`` / ``users.not-created``) and read
        ``.payload``.

        Raises :class:`~exoservice.RequestTimeout` after ``timeout``
        seconds, and what :meth:`reply` raises. The wait releases the GIL;
        Ctrl-C still stops the service meanwhile (the request then runs to
        its end, as a running handler does while the service drains).
        """
        return Message._from_native(self._d.request(name, payload, timeout))


class AsyncContext(_BaseContext):
    """The context of an ``async def`` handler: ``request`` is awaited."""

    __slots__ = ()

    async def request(
        self,
        name: str,
        payload: Payload = None,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> Message:
        """Like :meth:`Context.request`, awaited: other handlers run while
        it waits. Cancelling the awaiting task forgets the request."""
        d = self._d
        return await self._service._request_async(
            lambda token: d.request_async(name, payload, timeout, token)
        )


Handler = Callable[[Any, Any], Any]
Hook = Callable[[], Any]


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def _check_signature(fn: Callable[..., Any], args: int, what: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C function: it will tell when called
    try:
        sig.bind(*([None] * args))
    except TypeError as e:
        shape = "(payload, ctx)" if args == 2 else "no arguments"
        raise TypeError(f"{what} must take {shape}: {fn!r} {sig} cannot ({e})") from None


class Service:
    """A service: its config, its handlers and its before-all hooks.

    ``Service()`` reads ``service.yml`` (or the legacy ``config.yml``) in
    ``dir`` (default: the current directory) and the environment (``ROLE``,
    ``EXOCOM_HOST``, ``EXOCOM_PORT``, ``EXOSERVICE_CONCURRENCY``,
    ``EXOSERVICE_OUTGOING_BUFFER``, ``EXOSERVICE_DRAIN_TIMEOUT_MS``); the
    keyword arguments win over both. A config that cannot be used raises
    :class:`~exoservice.ConfigError`.
    """

    def __init__(
        self,
        dir: "PathLike" = ".",
        *,
        role: Optional[str] = None,
        exocom_host: Optional[str] = None,
        exocom_port: Optional[int] = None,
    ) -> None:
        _logging.sync_log_level()
        if exocom_port is not None and (
            isinstance(exocom_port, bool) or not isinstance(exocom_port, int)
        ):
            raise TypeError(f"exocom_port must be an int, not {type(exocom_port).__name__}")
        native = _native.NativeService(os.fspath(dir), role, exocom_host, exocom_port)
        self._init(native)

    @classmethod
    def from_parts(
        cls,
        role: str,
        receives: Iterable[str] = (),
        sends: Iterable[str] = (),
        *,
        exocom_host: str = "localhost",
        exocom_port: int = 80,
    ) -> "Service":
        """A service configured in code instead of a file (scripts, tests).
        The environment is not read."""
        _logging.sync_log_level()
        native = _native.NativeService.from_parts(
            role, list(receives), list(sends), exocom_host, exocom_port
        )
        self = cls.__new__(cls)
        self._init(native)
        return self

    def _init(self, native: _native.NativeService) -> None:
        self._native = native
        self._handlers: Dict[str, Handler] = {}
        self._async_names: Set[str] = set()
        self._hooks: List[Hook] = []
        # Reentrant: signal handlers run on the main thread, maybe inside it.
        self._lock = threading.RLock()
        self._state = "new"  # new -> running -> stopped
        self._connected = threading.Event()
        self._stop_signals = 0
        self._forced: Optional[BaseException] = None
        # blocking mode on the main thread: the drain deadline's watchdog
        self._main_run = False
        self._in_handler = False
        self._watchdog: Optional[threading.Timer] = None
        self._deadline_hit = False
        # asyncio mode
        self._tokens = itertools.count(1)
        self._pending: Dict[int, "asyncio.Future[Message]"] = {}
        self._events_loop: Optional[asyncio.AbstractEventLoop] = None
        self._events_fd = -1
        self._stopped_fut: Optional["asyncio.Future[None]"] = None
        self._drained_fut: Optional["asyncio.Future[Tuple[int, int, int]]"] = None
        self._tasks: Set["asyncio.Task[None]"] = set()

    # -- configuration -----------------------------------------------------

    @property
    def role(self) -> str:
        """The role the service registers as."""
        return self._native.role

    @property
    def receives(self) -> List[str]:
        """The message names it receives (``messages.receives``)."""
        return self._native.receives

    @property
    def sends(self) -> List[str]:
        """The message names it may send (``messages.sends``)."""
        return self._native.sends

    @property
    def exocom_host(self) -> str:
        """Where the bus runs."""
        return self._native.exocom_host

    @property
    def exocom_port(self) -> int:
        """The bus's port."""
        return self._native.exocom_port

    @property
    def config_file(self) -> str:
        """The config file that was read."""
        return self._native.config_file

    def __repr__(self) -> str:
        return (
            f"<Service {self.role!r} at {self.exocom_host}:{self.exocom_port} "
            f"({self._state})>"
        )

    # -- registration ------------------------------------------------------

    @overload
    def handler(self, name: str) -> Callable[[F], F]: ...

    @overload
    def handler(self, name: str, fn: F) -> F: ...

    def handler(self, name: str, fn: Optional[F] = None) -> Any:
        """Registers the handler of messages named ``name``, as a decorator
        (``@service.handler("ping")``) or directly
        (``service.handler("ping", ping)``).

        The handler is called as ``handler(payload, ctx)``; a plain ``def``
        gets a :class:`Context`, an ``async def`` an :class:`AsyncContext`
        and runs on asyncio. ``name`` must be under ``receives`` in the
        config (else :class:`~exoservice.UndeclaredMessageError`), and have
        one handler (else :class:`~exoservice.UsageError`).
        """

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"the handler of {name!r} must be callable, not {fn!r}")
            _check_signature(fn, 2, f"the handler of {name!r}")
            with self._lock:
                self._check_new("register a handler")
                if name in self._handlers:
                    raise UsageError(f"a handler for '{name}' is already registered", name=name)
                self._native.handle(name)
                self._handlers[name] = fn
                if _is_async(fn):
                    self._async_names.add(name)
            return fn

        if fn is not None:
            return register(fn)
        return register

    def before_all(self, fn: F) -> F:
        """Registers a hook that runs before the service connects to the bus
        (open a database, load a model, ...). Hooks take no arguments, may
        be ``async def``, and run in the order registered; one that raises
        stops :meth:`run` with its exception, before the service connects."""
        if not callable(fn):
            raise TypeError(f"a before-all hook must be callable, not {fn!r}")
        _check_signature(fn, 0, "a before-all hook")
        with self._lock:
            self._check_new("register a before-all hook")
            self._hooks.append(fn)
        return fn

    def _check_new(self, what: str) -> None:
        if self._state != "new":
            raise UsageError(f"cannot {what}: the service has already started")

    def _needs_asyncio(self) -> bool:
        return bool(self._async_names) or any(_is_async(h) for h in self._hooks)

    def _begin(self) -> None:
        with self._lock:
            if self._state != "new":
                raise UsageError(
                    "a service runs once; create a new Service to run it again"
                )
            self._state = "running"
        _logging.sync_log_level()

    # -- sending outside handlers -----------------------------------------

    def send(self, name: str, payload: Payload = None, *, auth: Any = None) -> None:
        """Sends a message as this service, outside of any handler, carrying
        ``auth`` (opaque credentials, any JSON value; ``None``: no auth).
        Before the service connects, it waits in the outgoing buffer. Errors
        as for :meth:`Context.reply`."""
        self._native.send(name, payload, auth)

    def request(
        self,
        name: str,
        payload: Payload = None,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        auth: Any = None,
    ) -> Message:
        """Sends ``name`` (carrying ``auth`` when given) and blocks until the
        first message of its activity (see :meth:`Context.request`), from
        any thread. A reply carries the request's ``auth`` back."""
        return Message._from_native(self._native.request(name, payload, timeout, auth))

    async def request_async(
        self,
        name: str,
        payload: Payload = None,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        auth: Any = None,
    ) -> Message:
        """:meth:`request`, awaited on the running event loop."""
        native = self._native
        return await self._request_async(
            lambda token: native.request_async(name, payload, timeout, token, auth)
        )

    # -- lifecycle ---------------------------------------------------------

    def stop(self) -> None:
        """Stops the service: it takes no new message, lets running handlers
        finish (within the drain deadline), sends what waits and leaves the
        bus; then :meth:`run` returns. Callable from any thread and from
        signal handlers; before the start, the run ends at once."""
        self._native.stop()
        self._arm_watchdog()

    @property
    def connected(self) -> bool:
        """Whether the connection to the bus is up right now."""
        return self._native.connected

    def wait_online(self, timeout: float = 10.0) -> bool:
        """Blocks until the service registered with the bus (it prints
        ``online at port N`` then), at most ``timeout`` seconds; returns
        whether it did. For another thread than the one running it."""
        deadline = time.monotonic() + timeout
        while not self._connected.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or self._state == "stopped":
                return False
        left = max(0.0, deadline - time.monotonic())
        return self._native.wait_online(left)

    def run(self) -> None:
        """Runs the service until it is stopped, then drains; blocks.

        Runs the before-all hooks, connects and registers, prints ``online at
        port N``, and handles messages. Plain handlers run one at a time on
        this thread. With any ``async def`` handler or hook, the service
        runs on a new asyncio event loop instead (see :meth:`run_async`).

        On the main thread, SIGINT (Ctrl-C) and SIGTERM stop the service:
        it takes no new message, lets the running handler finish (within the
        drain deadline), sends what waits, leaves the bus, and ``run``
        returns. A second Ctrl-C raises ``KeyboardInterrupt`` at once. On
        another thread, call :meth:`stop`.
        """
        if self._needs_asyncio():
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(self.run_async())
                return
            raise UsageError(
                "run() blocks; inside a running event loop use `await service.run_async()`"
            )
        self._begin()
        _logging.ensure_handler()
        try:
            for hook in self._hooks:
                hook()
        except BaseException:
            self._end()
            raise
        with self._sync_signals():
            self._main_run = threading.current_thread() is threading.main_thread()
            try:
                self._native.connect()
                self._connected.set()
                while True:
                    d = self._native.next()
                    if d is None:
                        break
                    self._handle_sync(d)
            except _DrainDeadline:
                log.warning(
                    "the running handler was cut short at the drain deadline (%.1f s)",
                    self._native.drain_timeout,
                )
            except KeyboardInterrupt:
                log.warning("quitting without draining")
                self._native.stop()
                self._end()
                raise
            except BaseException:
                self._native.stop()
                self._end(self._native.drain())
                raise
            self._end(self._native.drain())

    async def run_async(self, *, handle_signals: bool = True) -> None:
        """Runs the service on the running asyncio event loop until it is
        stopped, then drains. For programs with their own event loop::

            await asyncio.gather(service.run_async(), web_server())

        ``async def`` handlers run as tasks, concurrently (at most
        ``concurrency`` at once, 64 by default); plain handlers run on the
        loop's thread, one at a time. With ``handle_signals`` (on the main
        thread), SIGINT and SIGTERM stop the service while it runs. When
        the awaiting task is cancelled, the service drains and the
        cancellation goes on.
        """
        loop = asyncio.get_running_loop()
        self._begin()
        _logging.ensure_handler()
        try:
            for hook in self._hooks:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            self._attach_loop(loop)
        except BaseException:
            self._end()
            raise
        self._stopped_fut = loop.create_future()
        self._drained_fut = loop.create_future()
        signals = self._async_signals(loop) if handle_signals else []
        cancelled = False
        try:
            self._native.connect()
            self._connected.set()
            self._native.start_pump()
            try:
                await asyncio.shield(self._stopped_fut)
            except asyncio.CancelledError:
                cancelled = True
                self._native.stop()
                await self._stopped_fut
            if self._forced is None:
                self._native.start_drain()
            report = await self._drained_fut
            await self._cancel_tasks()
            self._end(report)
        finally:
            for sig, previous in signals:
                loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)
            if self._state != "stopped":
                self._native.stop()
                self._end()
            self._detach_loop()
        if self._forced is not None:
            raise self._forced
        if cancelled:
            raise asyncio.CancelledError()

    def _end(self, report: Optional[Tuple[int, int, int]] = None) -> None:
        with self._lock:
            self._state = "stopped"
            watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
        if report is not None:
            unfinished, unsent, unhandled = report
            if unfinished or unsent or unhandled:
                log.warning(
                    "stopped: %d handlers unfinished, %d messages unsent, %d messages unhandled",
                    unfinished,
                    unsent,
                    unhandled,
                )
            else:
                log.info("stopped")
        _native.flush_logs(1.0)

    # -- blocking mode -----------------------------------------------------

    def _handle_sync(self, d: _native.NativeDelivery) -> None:
        self._in_handler = True
        try:
            handler = self._handlers[d.name]
            result = handler(d.payload, Context(d, self))
            if inspect.isawaitable(result):
                if hasattr(result, "close"):
                    result.close()
                raise UsageError(
                    f"the handler of '{d.name}' returned an awaitable; declare it "
                    "`async def` so that it runs on asyncio"
                )
        except Exception:
            log.exception("handler for '%s' (activity %s) failed", d.name, d.activity_id)
            d.fail()
        finally:
            self._in_handler = False
            d.finish()

    def _arm_watchdog(self) -> None:
        # A plain handler on the main thread cannot be awaited with a
        # deadline: when it still runs at the drain deadline, a SIGINT to the
        # main thread cuts it short (see _on_stop_signal).
        with self._lock:
            if not self._main_run or self._state != "running" or self._watchdog is not None:
                return
            timer = threading.Timer(self._native.drain_timeout, self._on_drain_deadline)
            timer.daemon = True
            self._watchdog = timer
        timer.start()

    def _on_drain_deadline(self) -> None:
        if self._state != "running" or not self._in_handler:
            return
        self._deadline_hit = True
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def _sync_signals(self) -> "_SignalScope":
        return _SignalScope(self)

    def _on_stop_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        if self._deadline_hit:
            self._deadline_hit = False
            raise _DrainDeadline()
        self._stop_signals += 1
        name = signal.Signals(signum).name
        if self._stop_signals > 1:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            log.warning("%s again: quitting without draining", name)
            raise SystemExit(128 + signum)
        log.info(
            "%s: stopping (running handlers finish, then the service leaves); "
            "press Ctrl-C again to quit at once",
            name,
        )
        self.stop()

    # -- asyncio mode ------------------------------------------------------

    def _async_signals(self, loop: asyncio.AbstractEventLoop) -> List[Tuple[int, Any]]:
        if threading.current_thread() is not threading.main_thread():
            return []
        installed: List[Tuple[int, Any]] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous = signal.getsignal(sig)
                loop.add_signal_handler(sig, self._on_async_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            installed.append((sig, previous))
        return installed

    def _on_async_signal(self, signum: int) -> None:
        self._stop_signals += 1
        if self._stop_signals > 1:
            log.warning("%s again: quitting without draining", signal.Signals(signum).name)
            self._forced = (
                KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)
            )
            for task in list(self._tasks):
                task.cancel()
            if self._stopped_fut is not None and not self._stopped_fut.done():
                self._stopped_fut.set_result(None)
            if self._drained_fut is not None and not self._drained_fut.done():
                self._drained_fut.set_result((len(self._tasks), 0, 0))
            return
        log.info(
            "%s: stopping (running handlers finish, then the service leaves); "
            "press Ctrl-C again to quit at once",
            signal.Signals(signum).name,
        )
        self._native.stop()

    def _attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._events_loop is loop:
            return
        if self._events_loop is not None and not self._events_loop.is_closed():
            raise UsageError("this service is already bound to another event loop")
        fd = self._native.events_fd()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_events)
        self._events_loop = loop
        self._events_fd = fd

    def _detach_loop(self) -> None:
        loop = self._events_loop
        if loop is None:
            return
        if not loop.is_closed():
            loop.remove_reader(self._events_fd)
        self._events_loop = None
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ServiceStopped("the service stopped before the answer came"))

    async def _request_async(self, start: Callable[[int], _native.RequestHandle]) -> Message:
        loop = asyncio.get_running_loop()
        self._attach_loop(loop)
        token = next(self._tokens)
        fut: "asyncio.Future[Message]" = loop.create_future()
        self._pending[token] = fut
        try:
            handle = start(token)
        except BaseException:
            del self._pending[token]
            raise
        try:
            return await fut
        except asyncio.CancelledError:
            handle.cancel()
            raise
        finally:
            self._pending.pop(token, None)

    def _on_events(self) -> None:
        try:
            os.read(self._events_fd, 512)
        except (BlockingIOError, InterruptedError):
            pass
        for event in self._native.take_events():
            kind = event[0]
            if kind == "delivery":
                self._dispatch_async(event[1])
            elif kind == "reply" or kind == "error":
                fut = self._pending.pop(event[1], None)
                if fut is None or fut.done():
                    continue
                if kind == "reply":
                    fut.set_result(Message._from_native(event[2]))
                else:
                    fut.set_exception(event[2])
            elif kind == "stopped":
                if self._stopped_fut is not None and not self._stopped_fut.done():
                    self._stopped_fut.set_result(None)
            elif kind == "drained":
                if self._drained_fut is not None and not self._drained_fut.done():
                    self._drained_fut.set_result(event[1])

    def _dispatch_async(self, d: _native.NativeDelivery) -> None:
        if d.name not in self._async_names:
            try:
                handler = self._handlers[d.name]
                result = handler(d.payload, Context(d, self))
            except Exception:
                log.exception("handler for '%s' (activity %s) failed", d.name, d.activity_id)
                d.fail()
                d.finish()
                return
            if not inspect.isawaitable(result):
                d.finish()
                return
            awaitable: Awaitable[Any] = result
        else:
            try:
                awaitable = self._handlers[d.name](d.payload, AsyncContext(d, self))
            except Exception:
                log.exception("handler for '%s' (activity %s) failed", d.name, d.activity_id)
                d.fail()
                d.finish()
                return
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._await_handler(awaitable, d))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _await_handler(self, awaitable: Awaitable[Any], d: _native.NativeDelivery) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            log.warning(
                "handler for '%s' (activity %s) was cancelled", d.name, d.activity_id
            )
            d.fail()
        except Exception:
            log.exception("handler for '%s' (activity %s) failed", d.name, d.activity_id)
            d.fail()
        finally:
            d.finish()

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class _DrainDeadline(BaseException):
    """Raised in a plain handler still running at the drain deadline."""


class _SignalScope:
    """Installs the service's SIGINT/SIGTERM handlers for the blocking run
    (main thread only) and puts the previous ones back."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._previous: List[Tuple[int, Any]] = []

    def __enter__(self) -> "_SignalScope":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._previous.append((sig, signal.signal(sig, self._service._on_stop_signal)))
                except (ValueError, OSError):
                    continue
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous:
            if previous is not None:
                signal.signal(sig, previous)


def bootstrap(
    handlers: Mapping[str, Callable[..., Any]],
    *,
    dir: "PathLike" = ".",
    role: Optional[str] = None,
    exocom_host: Optional[str] = None,
    exocom_port: Optional[int] = None,
) -> None:
    """Runs a service from a mapping of message names to handlers, the way
    exoservice-js services are written::

        exoservice.bootstrap({
            "before_all": connect_db,          # or "beforeAll"
            "ping": lambda payload, ctx: ctx.reply("pong", payload),
        })

    Blocks like :meth:`Service.run`. The keyword arguments go to
    :class:`Service`.
    """
    service = Service(dir, role=role, exocom_host=exocom_host, exocom_port=exocom_port)
    for key, fn in handlers.items():
        if key in ("before_all", "beforeAll"):
            service.before_all(fn)
        else:
            service.handler(key, fn)
    service.run()
