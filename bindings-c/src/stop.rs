//! Stopping a service from anywhere: another thread, a signal handler, or
//! the SIGINT/SIGTERM handler that `exo_service_run` installs.
//!
//! A stop request only touches an atomic flag and writes one byte to a
//! socket pair, both async-signal-safe. A task on the I/O runtime waits on
//! the other end of the pair and tells the engine to stop, which wakes the
//! thread that is blocked in `exo_service_run` or `exo_service_poll`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::raw::c_int;
use std::os::unix::net::UnixStream;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

/// A service's stop request.
pub(crate) struct StopSignal {
    requested: AtomicBool,
    write_fd: RawFd,
    // Both ends stay open as long as the signal exists, so a write never
    // meets a closed peer (no SIGPIPE) and never reaches a reused fd.
    _write: UnixStream,
    _read: UnixStream,
}

impl StopSignal {
    /// A new signal, and the reading end for the task that waits on it.
    pub(crate) fn new() -> io::Result<(Arc<StopSignal>, UnixStream)> {
        let (write, read) = UnixStream::pair()?;
        write.set_nonblocking(true)?;
        read.set_nonblocking(true)?;
        let for_task = read.try_clone()?;
        Ok((
            Arc::new(StopSignal {
                requested: AtomicBool::new(false),
                write_fd: write.as_raw_fd(),
                _write: write,
                _read: read,
            }),
            for_task,
        ))
    }

    /// Requests the stop; returns whether it had been requested before.
    /// Async-signal-safe: an atomic swap and one `write`, keeping `errno`.
    pub(crate) fn request(&self) -> bool {
        let before = self.requested.swap(true, Ordering::SeqCst);
        let saved = errno();
        // SAFETY: write_fd is open for the life of self; a full buffer
        // (EAGAIN) means a wake-up is already pending.
        unsafe {
            libc::write(self.write_fd, [1u8].as_ptr().cast(), 1);
        }
        set_errno(saved);
        before
    }

    /// Whether a stop was requested.
    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn errno_location() -> *mut c_int {
    // SAFETY: always valid for the calling thread.
    unsafe { libc::__errno_location() }
}

#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
fn errno_location() -> *mut c_int {
    // SAFETY: always valid for the calling thread.
    unsafe { libc::__error() }
}

fn errno() -> c_int {
    // SAFETY: the thread's errno.
    unsafe { *errno_location() }
}

fn set_errno(value: c_int) {
    // SAFETY: the thread's errno.
    unsafe { *errno_location() = value }
}

/// How many services can be in `exo_service_run` at once and still be
/// stopped by SIGINT/SIGTERM (more still run; they are stopped by
/// `exo_service_stop` only, with a warning).
const SLOTS: usize = 64;

/// The stop signals of the services inside `exo_service_run`, read by the
/// signal handler.
static RUNNING: [AtomicPtr<StopSignal>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];

/// The signal dispositions that were in place before the first
/// `exo_service_run`, restored when the last one returns.
struct Installed {
    users: usize,
    previous: Vec<(c_int, libc::sigaction)>,
}

static INSTALLED: Mutex<Installed> = Mutex::new(Installed {
    users: 0,
    previous: Vec::new(),
});

const SIGNALS: [c_int; 2] = [libc::SIGINT, libc::SIGTERM];

extern "C" fn on_stop_signal(_signal: c_int) {
    for slot in &RUNNING {
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a registered signal is kept alive by its guard.
            unsafe { (*p).request() };
        }
    }
}

fn handler_address() -> libc::sighandler_t {
    on_stop_signal as extern "C" fn(c_int) as libc::sighandler_t
}

/// While alive, SIGINT and SIGTERM request the stop of one service.
pub(crate) struct SignalGuard {
    slot: Option<usize>,
    _signal: Arc<StopSignal>,
}

/// Makes SIGINT and SIGTERM stop the service of `signal` until the guard
/// is dropped. The first guard installs the handler; dropping the last
/// restores what was there before (unless the program replaced it since).
pub(crate) fn on_signals(signal: &Arc<StopSignal>) -> SignalGuard {
    let p = Arc::as_ptr(signal).cast_mut();
    let slot = RUNNING.iter().position(|s| {
        s.compare_exchange(ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    });
    if slot.is_none() {
        tracing::warn!(
            "more than {SLOTS} services are running in this process; SIGINT and SIGTERM do not stop this one (use exo_service_stop)"
        );
    }
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if installed.users == 0 {
        installed.previous.clear();
        for sig in SIGNALS {
            // SAFETY: plain sigaction calls with zeroed, then filled structs.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler_address();
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &action, &mut old) == 0 {
                    installed.previous.push((sig, old));
                } else {
                    tracing::warn!("cannot handle signal {sig}: {}", io::Error::last_os_error());
                }
            }
        }
    }
    installed.users += 1;
    SignalGuard {
        slot,
        _signal: signal.clone(),
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            RUNNING[slot].store(ptr::null_mut(), Ordering::Release);
        }
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        installed.users -= 1;
        if installed.users == 0 {
            for (sig, old) in installed.previous.drain(..) {
                // SAFETY: plain sigaction calls.
                unsafe {
                    let mut current: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(sig, ptr::null(), &mut current) == 0
                        && current.sa_sigaction == handler_address()
                    {
                        libc::sigaction(sig, &old, ptr::null_mut());
                    }
                }
            }
        }
    }
}
