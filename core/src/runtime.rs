//! The runtime that owns all I/O when handlers are written in another
//! language: host code never runs on it, it never waits for host code.

use std::sync::OnceLock;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The process-wide runtime of the bindings (two worker threads named
/// `exoservice`), created on first use.
pub fn shared() -> std::io::Result<&'static tokio::runtime::Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("exoservice")
        .enable_all()
        .build()?;
    // Another thread may have won the race; its runtime is the one kept.
    Ok(RUNTIME.get_or_init(|| rt))
}
