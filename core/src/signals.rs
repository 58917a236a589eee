//! Waiting for the signals that stop a service (SIGINT, SIGTERM).

use std::future::Future;

/// Starts listening for SIGINT and SIGTERM now (from then on they no longer
/// kill the process) and returns a future that resolves at the first one.
/// Call it before starting work that a signal should stop cleanly; it
/// must be called inside a tokio runtime.
pub fn stop_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        async move {
            match streams {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(
                        "cannot listen for SIGINT/SIGTERM ({e}); only Ctrl-C will stop the service"
                    );
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM. It listens from its
/// first poll; use [`stop_signal`] to listen from an earlier point.
pub async fn wait_for_stop() {
    stop_signal().await;
}
