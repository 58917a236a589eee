//! `exo_service`: a service's config, handlers, connection and run loop.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use exoservice::config::{Env, ServiceConfig, env};
use exoservice::dispatch::{Delivery, Next};
use exoservice::{Client, Engine};

use crate::ctx::{CtxHandle, clear_out, finish_request, finish_request_with_auth, timeout_of};
use crate::error::{Failure, exo_status, pointer_of, status_of, value_of};
use crate::options::Options;
use crate::stop::{StopSignal, on_signals};
use crate::strings::{self, c_string};

/// A message handler: called on the thread inside `exo_service_run` or
/// `exo_service_poll` with the message's context, its payload as JSON text
/// (`"null"` when it has none) and the `user` pointer given to
/// `exo_service_on`. `ctx` and `payload_json` are lent for the call only.
#[allow(non_camel_case_types)]
pub type exo_handler_fn = Option<
    unsafe extern "C" fn(ctx: *mut CtxHandle, payload_json: *const c_char, user: *mut c_void),
>;

/// The before-all hook: called once, on the thread that starts the service,
/// before it registers with the bus. It may send with `exo_send` (the
/// messages go out once registered; a request made here cannot be answered
/// before that). Returning non-zero stops the start (`EXO_ERR_HOOK`).
#[allow(non_camel_case_types)]
pub type exo_hook_fn = Option<unsafe extern "C" fn(svc: *mut Service, user: *mut c_void) -> c_int>;

/// A `void *` of the caller, handed back unchanged.
#[derive(Clone, Copy)]
struct User(*mut c_void);
// SAFETY: the library never dereferences it; it only hands it back to the
// caller's functions on the caller's thread.
unsafe impl Send for User {}
unsafe impl Sync for User {}

#[derive(Clone, Copy)]
struct Handler {
    f: unsafe extern "C" fn(*mut CtxHandle, *const c_char, *mut c_void),
    user: User,
}

#[derive(Clone, Copy)]
struct Hook {
    f: unsafe extern "C" fn(*mut Service, *mut c_void) -> c_int,
    user: User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Made; handlers may be added; not connected.
    New,
    /// Connected (or connecting), taking messages.
    Started,
    /// The before-all hook failed.
    Failed,
    /// Stopped and drained, or stopped before it started.
    Finished,
}

/// A service: its config, handlers and connection. Opaque; made by
/// `exo_service_new` or `exo_service_new_with`, freed by
/// `exo_service_free`.
pub struct Service {
    engine: Arc<Engine>,
    runtime: tokio::runtime::Handle,
    handlers: RwLock<HashMap<String, Handler>>,
    before_all: Mutex<Option<Hook>>,
    state: Mutex<State>,
    /// Set while run, poll or start is on the way (no two at once, none
    /// from inside a callback).
    busy: AtomicBool,
    stop: Arc<StopSignal>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    handle_signals: bool,
    role: std::ffi::CString,
}

/// Clears `busy` when dropped.
struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How long one wait for a message lasts before the loop checks again.
const WAIT_SLICE: Duration = Duration::from_secs(3600);
/// At most this many messages are handled by one `exo_service_poll`.
const POLL_BATCH: i32 = 256;

impl Service {
    fn create(opts: &Options) -> Result<Service, Failure> {
        exoservice::logging::init();
        let dir = opts.dir.clone().unwrap_or_else(|| ".".into());
        let mut env = Env::process();
        if opts.role.is_some() {
            env = env.without(env::ROLE);
        }
        if opts.exocom_host.is_some() {
            env = env.without(env::EXOCOM_HOST);
        }
        if opts.exocom_port.is_some() {
            env = env.without(env::EXOCOM_PORT);
        }
        if opts.drain_timeout.is_some() {
            env = env.without(env::DRAIN_TIMEOUT_MS);
        }
        let mut config = ServiceConfig::load_with(&dir, &env, opts.role.as_deref())?;
        if let Some(host) = &opts.exocom_host {
            config.exocom_host.clone_from(host);
        }
        if let Some(port) = opts.exocom_port {
            config.exocom_port = port;
        }
        if let Some(d) = opts.drain_timeout {
            config.drain_timeout = d;
        }
        let runtime = exoservice::runtime::shared()
            .map_err(|e| Failure::internal(format!("cannot start the I/O threads: {e}")))?
            .handle()
            .clone();
        let role = c_string(&config.role);
        let engine = Arc::new(Engine::with_runtime(config, runtime.clone()));
        engine.announce_online(opts.announce_online);
        let (stop, read) = StopSignal::new()
            .map_err(|e| Failure::internal(format!("cannot make the stop socket: {e}")))?;
        let watcher = {
            let _entered = runtime.enter();
            let read = tokio::net::UnixStream::from_std(read)
                .map_err(|e| Failure::internal(format!("cannot watch the stop socket: {e}")))?;
            runtime.spawn(watch_stop(read, stop.clone(), engine.clone()))
        };
        Ok(Service {
            engine,
            runtime,
            handlers: RwLock::default(),
            before_all: Mutex::default(),
            state: Mutex::new(State::New),
            busy: AtomicBool::new(false),
            stop,
            watcher: Mutex::new(Some(watcher)),
            handle_signals: opts.handle_signals,
            role,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the service busy for run, poll or start.
    fn enter(&self) -> Result<Busy<'_>, Failure> {
        self.busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| {
                Failure::usage(
                    "the service is already running or starting (in another thread, or this call comes from one of its callbacks)",
                )
            })?;
        Ok(Busy(&self.busy))
    }

    /// Runs the before-all hook and connects, once. The caller holds `busy`.
    fn start(&self, me: *mut Service) -> Result<(), Failure> {
        match *self.state() {
            State::Started => return Ok(()),
            State::Failed => {
                return Err(Failure::usage(
                    "the service did not start (its before-all hook failed); free it and make a new one",
                ));
            }
            State::Finished => {
                return Err(Failure::new(
                    exo_status::EXO_ERR_STOPPED,
                    "the service has stopped; make a new one to run again",
                ));
            }
            State::New => {}
        }
        if self.stop.is_requested() {
            self.engine.stop();
            *self.state() = State::Finished;
            return Err(Failure::new(
                exo_status::EXO_ERR_STOPPED,
                "the service was stopped before it started",
            ));
        }
        let hook = self
            .before_all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(hook) = hook {
            // SAFETY: the caller's function with the caller's pointer.
            let rc = unsafe { (hook.f)(me, hook.user.0) };
            if rc != 0 {
                *self.state() = State::Failed;
                return Err(Failure::new(
                    exo_status::EXO_ERR_HOOK,
                    format!("the before-all hook returned {rc}; the service did not start"),
                ));
            }
        }
        self.engine.connect()?;
        *self.state() = State::Started;
        Ok(())
    }

    /// Calls the handler for one delivery on this thread.
    fn dispatch(&self, delivery: Delivery) {
        let handler = self
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&delivery.message().name)
            .copied();
        let Some(handler) = handler else {
            // The engine only delivers names that have a handler.
            tracing::warn!(
                "no handler for '{}' (activity {}); dropped",
                delivery.message().name,
                delivery.message().activity()
            );
            return;
        };
        let payload = c_string(delivery.message().payload_json());
        let mut ctx = CtxHandle::lent(delivery);
        // SAFETY: the caller's function with lent pointers that outlive the call.
        unsafe { (handler.f)(&mut ctx, payload.as_ptr(), handler.user.0) };
    }

    /// The next delivery, waiting at most `wait`; also turns a pending
    /// stop request into a stop of the engine.
    fn next(&self, wait: Duration) -> Next {
        if self.stop.is_requested() {
            self.engine.stop();
        }
        self.engine.next_blocking(wait)
    }

    /// Stops, lets detached work finish, sends what waits and leaves the
    /// bus (when started); the service is finished afterwards.
    fn finish(&self) {
        let started = {
            let mut state = self.state();
            let started = *state == State::Started;
            *state = State::Finished;
            started
        };
        self.engine.stop();
        if started {
            let report = self.runtime.block_on(self.engine.drain());
            tracing::debug!("stopped: {report:?}");
        }
    }

    fn run(&self, me: *mut Service) -> Result<(), Failure> {
        let _busy = self.enter()?;
        let _signals = self.handle_signals.then(|| on_signals(&self.stop));
        let was_new = *self.state() == State::New;
        match self.start(me) {
            Ok(()) => {}
            // Stopped before it started: nothing to run.
            Err(f) if f.status == exo_status::EXO_ERR_STOPPED && was_new => return Ok(()),
            Err(f) => return Err(f),
        }
        loop {
            match self.next(WAIT_SLICE) {
                Next::Delivery(d) => self.dispatch(d),
                Next::Timeout => {}
                Next::Stopped => break,
            }
        }
        self.finish();
        Ok(())
    }

    fn poll(&self, me: *mut Service, timeout_ms: i32) -> Result<i32, Failure> {
        let _busy = self.enter()?;
        self.start(me)?;
        let forever = timeout_ms < 0;
        let mut wait = if forever {
            WAIT_SLICE
        } else {
            Duration::from_millis(timeout_ms as u64)
        };
        let mut handled = 0;
        loop {
            match self.next(wait) {
                Next::Delivery(d) => {
                    self.dispatch(d);
                    handled += 1;
                    if handled >= POLL_BATCH {
                        return Ok(handled);
                    }
                    wait = Duration::ZERO;
                }
                Next::Timeout if forever && handled == 0 => {}
                Next::Timeout => return Ok(handled),
                Next::Stopped if handled > 0 => return Ok(handled),
                Next::Stopped => {
                    self.finish();
                    return Err(Failure::new(
                        exo_status::EXO_ERR_STOPPED,
                        "the service has stopped",
                    ));
                }
            }
        }
    }

    fn client(&self) -> Client {
        self.engine.client()
    }
}

/// Waits on the stop socket; stops the engine once a stop is requested.
async fn watch_stop(read: tokio::net::UnixStream, stop: Arc<StopSignal>, engine: Arc<Engine>) {
    let mut buf = [0u8; 64];
    loop {
        if stop.is_requested() {
            engine.stop();
            return;
        }
        if let Err(e) = read.readable().await {
            tracing::error!("cannot watch for stop requests: {e}");
            return;
        }
        loop {
            match read.try_read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::error!("cannot read stop requests: {e}");
                    return;
                }
            }
        }
    }
}

/// # Safety
/// `svc` is NULL or a live service.
unsafe fn service<'a>(svc: *mut Service) -> Result<&'a Service, Failure> {
    // SAFETY: per the caller's contract.
    unsafe { svc.as_ref() }.ok_or_else(|| Failure::usage("svc is NULL"))
}

/// A service configured by `service.yml` (or legacy `config.yml`) in `dir`
/// (NULL: the current directory) and the environment (`ROLE`,
/// `EXOCOM_HOST`, `EXOCOM_PORT`, `EXOSERVICE_*`), which wins over the file.
/// Nothing connects yet.
///
/// Ownership: the caller frees the result with `exo_service_free`. NULL on
/// error, with the reason (file:line:col: message) in `exo_last_error()`.
///
/// # Safety
/// `dir` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_service_new(dir: *const c_char) -> *mut Service {
    pointer_of("exo_service_new", || {
        let mut opts = Options::default();
        if !dir.is_null() {
            // SAFETY: per the contract.
            opts.dir = Some(unsafe { strings::text(dir, "dir") }?.into());
        }
        Ok(Box::into_raw(Box::new(Service::create(&opts)?)))
    })
}

/// Like `exo_service_new`, with options (role, bus, signals, ...; see
/// `exo_options_new`); NULL options are the defaults. The options are
/// read, not kept: free them whenever convenient.
///
/// Ownership: as `exo_service_new`.
///
/// # Safety
/// `opts` is NULL or a live `exo_options`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_service_new_with(opts: *const Options) -> *mut Service {
    pointer_of("exo_service_new_with", || {
        let default = Options::default();
        // SAFETY: per the contract.
        let opts = unsafe { opts.as_ref() }.unwrap_or(&default);
        Ok(Box::into_raw(Box::new(Service::create(opts)?)))
    })
}

/// Stops the service if it runs (draining as `exo_service_run` does),
/// leaves the bus and frees it. NULL is ignored. Must not be called while
/// `exo_service_run` or `exo_service_poll` is on the way for this service
/// (in another thread, or from one of its callbacks): that is refused
/// (logged, and the service is not freed). Stop it and let run return
/// first.
///
/// # Safety
/// `svc` is NULL or a live service, not used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_service_free(svc: *mut Service) {
    if svc.is_null() {
        return;
    }
    value_of("exo_service_free", (), || {
        // SAFETY: per the contract.
        let s = unsafe { &*svc };
        let Ok(busy) = s.enter() else {
            let text = "the service is running (exo_service_run or exo_service_poll is on the way); stop it and wait for run to return before freeing it; not freed";
            tracing::error!("exo_service_free: {text}");
            return Err(Failure::usage(text));
        };
        s.stop.request();
        s.finish();
        let watcher = s.watcher.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(watcher) = watcher {
            let _ = s.runtime.block_on(watcher);
        }
        drop(busy);
        // SAFETY: from Box::into_raw in exo_service_new(_with); not in use.
        drop(unsafe { Box::from_raw(svc) });
        Ok(())
    })
}

/// Handles messages named `name` with `handler` (called with `user`). The
/// name must be declared under `receives` (else `EXO_ERR_NOT_RECEIVED`);
/// one handler per name (else `EXO_ERR_DUPLICATE_HANDLER`). Messages the
/// service receives but has no handler for are logged and dropped.
///
/// # Safety
/// `svc` is a live service; `name` is NUL-terminated; `handler` and `user`
/// stay valid while the service lives.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_service_on(
    svc: *mut Service,
    name: *const c_char,
    handler: exo_handler_fn,
    user: *mut c_void,
) -> exo_status {
    status_of("exo_service_on", || {
        // SAFETY: per the contract.
        let s = unsafe { service(svc) }?;
        let name = unsafe { strings::name(name) }?;
        let f = handler.ok_or_else(|| Failure::usage("the handler is NULL"))?;
        s.engine.handle(name)?;
        s.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                name.to_owned(),
                Handler {
                    f,
                    user: User(user),
                },
            );
        Ok(())
    })
}

/// Sets the before-all hook (replacing an earlier one): called once, with
/// `user`, by the call that starts the service (`exo_service_start`,
/// `_run` or `_poll`), before it registers with the bus. Setting it after
/// the start is `EXO_ERR_USAGE`.
///
/// # Safety
/// `svc` is a live service; `hook` and `user` stay valid until the start.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_service_before_all(
    svc: *mut Service,
    hook: exo_hook_fn,
    user: *mut c_void,
) -> exo_status {
    status_of("exo_service_before_all", || {
        // SAFETY: per the contract.
        let s = unsafe { service(svc) }?;
        let f = hook.ok_or_else(|| Failure::usage("the hook is NULL"))?;
        if *s.state() != State::New {
            return Err(Failure::usage("the service has started already"));
        }
        *s.before_all.lock().unwrap_or_else(|e| e.into_inner()) = Some(Hook {
            f,
            user: User(user),
        });
        Ok(())
    })
}

/// Starts the service without running a loop: runs the before-all hook on
/// this thread, then connects and registers in the background. Then call
/// `exo_service_poll` from your own loop. Calling it again does nothing.
///
/// Returns `EXO_OK`; `EXO_ERR_HOOK`, `EXO_ERR_STOPPED` (stopped before it
/// started), `EXO_ERR_USAGE` (already running elsewhere).
///
/// # Safety
/// `svc` is a live service.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_service_start(svc: *mut Service) -> exo_status {
    status_of("exo_service_start", || {
        // SAFETY: per the contract.
        let s = unsafe { service(svc) }?;
        let _busy = s.enter()?;
        s.start(svc)
    })
}

/// Starts the service (if not yet) and handles its messages on this
/// thread until it is stopped, by `exo_service_stop` or by SIGINT/SIGTERM
/// (see `exo_options_set_handle_signals`); then lets detached work finish
/// (within the drain timeout), sends what waits and leaves the bus. Once
/// registered the service prints `online at port N` on stdout.
///
/// Returns `EXO_OK` after a stop (also when stopped before it started);
/// `EXO_ERR_HOOK`, `EXO_ERR_STOPPED` (ran before), `EXO_ERR_USAGE`
/// (already running elsewhere, or called from a callback).
///
/// # Safety
/// `svc` is a live service.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_service_run(svc: *mut Service) -> exo_status {
    status_of("exo_service_run", || {
        // SAFETY: per the contract.
        unsafe { service(svc) }?.run(svc)
    })
}

/// For programs with their own loop: starts the service if needed, waits
/// up to `timeout_ms` for a message (0: do not wait, -1: until a message
/// or a stop), and handles it and any others that are ready, on this
/// thread.
///
/// Returns the number of messages handled (0 when none came in time), or
/// a negative status: `EXO_ERR_STOPPED` once the service was stopped (it
/// has then drained and left the bus), `EXO_ERR_HOOK`, `EXO_ERR_USAGE`.
///
/// # Safety
/// `svc` is a live service.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_service_poll(svc: *mut Service, timeout_ms: i32) -> i32 {
    crate::error::count_of("exo_service_poll", || {
        // SAFETY: per the contract.
        unsafe { service(svc) }?.poll(svc, timeout_ms)
    })
}

/// Asks the service to stop: `exo_service_run` then stops taking
/// messages, finishes and returns; `exo_service_poll` returns
/// `EXO_ERR_STOPPED`. Returns at once. Async-signal-safe (callable from a
/// signal handler) and callable from any thread; calling it again does
/// nothing. NULL is ignored. It does not set `exo_last_error`.
///
/// # Safety
/// `svc` is NULL or a live service.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_service_stop(svc: *mut Service) {
    // Only an atomic swap and a write(2): nothing here can panic or allocate.
    // SAFETY: per the contract.
    if let Some(s) = unsafe { svc.as_ref() } {
        s.stop.request();
    }
}

/// Blocks until the service has registered with the bus (after
/// `exo_service_start`, or while another thread is in `exo_service_run`),
/// for at most `timeout_ms`. Any thread may call it.
///
/// Returns `EXO_OK`; `EXO_ERR_TIMEOUT`, `EXO_ERR_USAGE` (not started).
///
/// # Safety
/// `svc` is a live service.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_service_wait_online(svc: *mut Service, timeout_ms: i32) -> exo_status {
    status_of("exo_service_wait_online", || {
        // SAFETY: per the contract.
        let s = unsafe { service(svc) }?;
        let timeout = timeout_of(timeout_ms)?;
        let deadline = std::time::Instant::now() + timeout;
        // Another thread may be starting it right now: wait for that too.
        loop {
            match *s.state() {
                State::Started => break,
                State::New if std::time::Instant::now() < deadline => {}
                State::New => return Err(Failure::usage("the service has not been started")),
                State::Failed | State::Finished => {
                    return Err(Failure::new(
                        exo_status::EXO_ERR_STOPPED,
                        "the service is not running",
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if s.runtime.block_on(s.engine.wait_online(left)) {
            Ok(())
        } else {
            Err(Failure::new(
                exo_status::EXO_ERR_TIMEOUT,
                format!(
                    "the service did not register with ExoCom at {}:{} within {timeout_ms} ms",
                    s.engine.config().exocom_host,
                    s.engine.config().exocom_port
                ),
            ))
        }
    })
}

/// The role the service registers as.
///
/// Ownership: the text belongs to the service and lives as long as it does.
/// NULL only when `svc` is NULL.
///
/// # Safety
/// `svc` is NULL or a live service.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_service_role(svc: *mut Service) -> *const c_char {
    value_of("exo_service_role", std::ptr::null(), || {
        // SAFETY: per the contract.
        let s = unsafe { service(svc) }?;
        Ok(s.role.as_ptr())
    })
}

/// Sends a message `name` (declared under `sends`) in a new activity.
/// `payload_json` is UTF-8 JSON text, or NULL for no payload. Any thread
/// may send; before the service has connected (in the before-all hook,
/// say) and while the bus is away, messages wait in the outgoing buffer.
///
/// Returns `EXO_OK`; `EXO_ERR_UNDECLARED`, `EXO_ERR_PAYLOAD` (not JSON),
/// `EXO_ERR_BUFFER_FULL`, `EXO_ERR_STOPPED`, `EXO_ERR_USAGE`.
///
/// # Safety
/// `svc` is a live service; the strings are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_send(
    svc: *mut Service,
    name: *const c_char,
    payload_json: *const c_char,
) -> exo_status {
    status_of("exo_send", || {
        // SAFETY: per the contract.
        let s = unsafe { service(svc) }?;
        let (name, payload) = unsafe { strings::name_and_payload(name, payload_json) }?;
        Ok(s.client().send_raw(name, payload, None)?)
    })
}

/// Like `exo_send`, with `auth` (opaque credentials, JSON text, or NULL
/// for none) on the message; the receiver's replies carry it back.
///
/// # Safety
/// As `exo_send`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_send_with_auth(
    svc: *mut Service,
    name: *const c_char,
    payload_json: *const c_char,
    auth_json: *const c_char,
) -> exo_status {
    status_of("exo_send_with_auth", || {
        // SAFETY: per the contract.
        let s = unsafe { service(svc) }?;
        let (name, payload) = unsafe { strings::name_and_payload(name, payload_json) }?;
        let auth = unsafe { strings::json(auth_json, "auth", name) }?;
        Ok(s.client().send_raw(name, payload, auth)?)
    })
}

/// Sends a message `name` (declared under `sends`) and blocks until the
/// first message of its activity arrives (the reply; it does not go to a
/// handler), for at most `timeout_ms` (> 0). Any thread may call it, a
/// handler too.
///
/// On `EXO_OK`, `*reply_name` gets the reply's name and `*reply_payload`
/// its payload as JSON text (`"null"` when it has none); either pointer
/// may be NULL when not wanted. Both are set to NULL first.
///
/// Ownership: the caller frees `*reply_name` and `*reply_payload` with
/// `exo_string_free`.
///
/// Returns `EXO_OK`; `EXO_ERR_TIMEOUT`, `EXO_ERR_UNDECLARED`,
/// `EXO_ERR_PAYLOAD`, `EXO_ERR_BUFFER_FULL`, `EXO_ERR_STOPPED`,
/// `EXO_ERR_USAGE`.
///
/// # Safety
/// `svc` is a live service; the strings are NULL or NUL-terminated;
/// `reply_name` and `reply_payload` are NULL or point to writable pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_request(
    svc: *mut Service,
    name: *const c_char,
    payload_json: *const c_char,
    timeout_ms: i32,
    reply_name: *mut *mut c_char,
    reply_payload: *mut *mut c_char,
) -> exo_status {
    status_of("exo_request", || {
        // SAFETY: per the contract.
        unsafe { clear_out(reply_name, reply_payload) };
        let s = unsafe { service(svc) }?;
        let (name, payload) = unsafe { strings::name_and_payload(name, payload_json) }?;
        let timeout = timeout_of(timeout_ms)?;
        let pending = s.client().start_request(name, payload, None, timeout)?;
        // SAFETY: per the contract.
        unsafe { finish_request(pending, reply_name, reply_payload) }
    })
}

/// Like `exo_request`, with `auth` (opaque credentials, JSON text, or NULL
/// for none) on the request; the answer's auth (the same, when the
/// receiver replied) comes back in `*reply_auth` as JSON text, or NULL
/// when the answer has none. `reply_auth` may be NULL when not wanted.
///
/// Ownership: the caller frees `*reply_name`, `*reply_payload` and
/// `*reply_auth` with `exo_string_free`.
///
/// Returns as `exo_request` (`EXO_ERR_PAYLOAD` also for `auth` that is
/// not JSON).
///
/// # Safety
/// `svc` is a live service; the strings are NULL or NUL-terminated;
/// `reply_name`, `reply_payload` and `reply_auth` are NULL or point to
/// writable pointers.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn exo_request_with_auth(
    svc: *mut Service,
    name: *const c_char,
    payload_json: *const c_char,
    auth_json: *const c_char,
    timeout_ms: i32,
    reply_name: *mut *mut c_char,
    reply_payload: *mut *mut c_char,
    reply_auth: *mut *mut c_char,
) -> exo_status {
    status_of("exo_request_with_auth", || {
        // SAFETY: per the contract.
        unsafe {
            clear_out(reply_name, reply_payload);
            if !reply_auth.is_null() {
                *reply_auth = std::ptr::null_mut();
            }
        }
        let s = unsafe { service(svc) }?;
        let (name, payload) = unsafe { strings::name_and_payload(name, payload_json) }?;
        let auth = unsafe { strings::json(auth_json, "auth", name) }?;
        let timeout = timeout_of(timeout_ms)?;
        let pending = s.client().start_request(name, payload, auth, timeout)?;
        // SAFETY: per the contract.
        unsafe { finish_request_with_auth(pending, reply_name, reply_payload, reply_auth) }
    })
}
