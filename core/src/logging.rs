//! Log output: `tracing` events, printed to stderr unless the program set
//! up its own subscriber. `RUST_LOG` filters (default `info`). Colours are
//! used only when stderr is a terminal.

/// Installs the default subscriber (stderr, `RUST_LOG` filter, default
/// `info`) unless one is installed already. Safe to call more than once.
pub fn init() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in captured or piped logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
