//! Log output: `tracing` events, printed to stderr unless the program set
//! up its own subscriber.
//!
//! - `EXO_LOG_FORMAT`: `text` (the default) prints human lines
//!   (`2026-01-05T10:00:00.123456Z  WARN cannot reach ExoCom at ...`);
//!   `json` prints one JSON object per line, with the keys `timestamp`,
//!   `level`, `message` (plus any structured fields of the event) and
//!   `target`.
//! - `RUST_LOG` filters, with the usual `tracing` directives (`warn`,
//!   `info,exoservice::relay=debug`, ...); default `info` (the NATS client library's own lines from `warn`).
//!
//! Colours are used only in the text format, and only when stderr is a
//! terminal. The bus's own lines (route lines, registrations, `Warning: ...`)
//! do not go through here: see [`crate::bus::LogSink`], which follows the
//! same two variables. `docs/logging.md` describes both.

use tracing::Level;
use tracing_subscriber::filter::Targets;

/// The variable that picks the log format.
pub const FORMAT_VAR: &str = "EXO_LOG_FORMAT";
/// The variable that filters log lines (`tracing`'s `EnvFilter` syntax).
pub const FILTER_VAR: &str = "RUST_LOG";
/// The filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,async_nats=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Human lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// Reads a value of `EXO_LOG_FORMAT`: `json`, or `text` (also `human`,
    /// `plain`, `full`, and empty); case and surrounding blanks do not
    /// matter. `Err` names the value that is neither.
    pub fn parse(value: &str) -> Result<Format, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "" | "text" | "human" | "plain" | "full" => Ok(Format::Text),
            _ => Err(format!(
                "{FORMAT_VAR}={value:?} is not a log format (use `text` or `json`); using text"
            )),
        }
    }

    /// The format `EXO_LOG_FORMAT` of this process asks for, with the
    /// complaint about a value that is not a format.
    pub fn from_env_checked() -> (Format, Option<String>) {
        match std::env::var(FORMAT_VAR) {
            Ok(value) => match Format::parse(&value) {
                Ok(format) => (format, None),
                Err(complaint) => (Format::Text, Some(complaint)),
            },
            Err(_) => (Format::Text, None),
        }
    }

    /// The format `EXO_LOG_FORMAT` of this process asks for (text when it
    /// is unset or not a format).
    pub fn from_env() -> Format {
        Format::from_env_checked().0
    }
}

/// Installs the default subscriber (stderr, the format of
/// `EXO_LOG_FORMAT`, the `RUST_LOG` filter, default `info`) unless one is
/// installed already. Safe to call more than once.
pub fn init() {
    use tracing_subscriber::EnvFilter;
    let (filter, bad_filter) = match std::env::var(FILTER_VAR) {
        Ok(text) if !text.trim().is_empty() => match EnvFilter::try_new(&text) {
            Ok(filter) => (filter, None),
            Err(e) => (
                EnvFilter::new(DEFAULT_FILTER),
                Some(format!(
                    "{FILTER_VAR}={text:?} is not a log filter ({e}); using `{DEFAULT_FILTER}`"
                )),
            ),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let (format, bad_format) = Format::from_env_checked();
    let installed = match format {
        Format::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Colour codes only on a terminal, not in captured or piped logs.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init()
            .is_ok(),
        Format::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init()
            .is_ok(),
    };
    if installed {
        for complaint in [bad_filter, bad_format].into_iter().flatten() {
            tracing::warn!("{complaint}");
        }
    }
}

/// A level filter read from `RUST_LOG` for log lines that do not go
/// through a `tracing` subscriber (the bus's lines): whether a line of a
/// target at a level is wanted. It understands the directives
/// `LEVEL`, `TARGET`, `TARGET=LEVEL` (comma-separated; the most specific
/// target wins); span and field filters (`[span{field=1}]`) are ignored.
/// Unset or empty means `info`.
#[derive(Debug, Clone)]
pub struct LineFilter {
    targets: Targets,
}

impl LineFilter {
    /// The filter of this process's `RUST_LOG`.
    pub fn from_env() -> LineFilter {
        LineFilter::parse(std::env::var(FILTER_VAR).ok().as_deref())
    }

    /// The filter of a `RUST_LOG` value (`None`: unset).
    pub fn parse(value: Option<&str>) -> LineFilter {
        let text = value.map(str::trim).filter(|v| !v.is_empty());
        let text = text.unwrap_or(DEFAULT_FILTER);
        // Keep what `Targets` understands: drop span and field filters,
        // which do not apply to plain lines.
        let simple: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty() && !d.contains('[') && !d.contains('{'))
            .collect();
        let targets = simple
            .join(",")
            .parse::<Targets>()
            .or_else(|_| DEFAULT_FILTER.parse::<Targets>())
            .unwrap_or_else(|_| Targets::new().with_default(Level::INFO));
        LineFilter { targets }
    }

    /// Whether a line of `target` at `level` is wanted.
    pub fn enabled(&self, target: &str, level: Level) -> bool {
        self.targets.would_enable(target, &level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_formats() {
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert_eq!(Format::parse(" JSON "), Ok(Format::Json));
        assert_eq!(Format::parse("text"), Ok(Format::Text));
        assert_eq!(Format::parse(""), Ok(Format::Text));
        let err = Format::parse("yaml").unwrap_err();
        assert!(err.contains("EXO_LOG_FORMAT=\"yaml\""), "{err}");
    }

    #[test]
    fn filters_lines_like_rust_log() {
        let default = LineFilter::parse(None);
        assert!(default.enabled("exocom", Level::INFO));
        assert!(!default.enabled("exocom", Level::DEBUG));
        let warn = LineFilter::parse(Some("warn"));
        assert!(!warn.enabled("exocom", Level::INFO));
        assert!(warn.enabled("exocom", Level::WARN));
        assert!(warn.enabled("exocom", Level::ERROR));
        let mixed = LineFilter::parse(Some("error,exocom=info"));
        assert!(mixed.enabled("exocom", Level::INFO));
        assert!(!mixed.enabled("exoservice", Level::WARN));
        let other = LineFilter::parse(Some("exoservice=debug"));
        assert!(!other.enabled("exocom", Level::ERROR));
        let spans = LineFilter::parse(Some("warn,[request{id=1}]=trace"));
        assert!(!spans.enabled("exocom", Level::INFO));
        assert!(spans.enabled("exocom", Level::WARN));
        let off = LineFilter::parse(Some("off"));
        assert!(!off.enabled("exocom", Level::ERROR));
        let nonsense = LineFilter::parse(Some("=%%="));
        assert!(nonsense.enabled("exocom", Level::INFO));
    }
}
