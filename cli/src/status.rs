//! `exo status [--bus URL]`: the live topology of a bus. It reads the
//! bus's `/config.json` (the routes and who is connected) and its
//! `/metrics` twice, an interval apart, and prints each role with its
//! instances and what it sends and receives, then the message rates per
//! message name and receiving role, the totals, refusals and queues.
//!
//! The bus is `--bus` (`host:port`, `http://host:port`, `ws://host:port`,
//! or `https://` / `wss://` for a bus serving TLS), else
//! `$EXOCOM_HOST:$EXOCOM_PORT`, else `localhost:3100`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to look at.
#[derive(Debug, Clone)]
pub struct StatusArgs {
    /// The bus (see the module docs for the forms).
    pub bus: String,
    /// Time between the two reads of `/metrics` (the rates' window).
    pub interval: Duration,
    /// How long each request may take.
    pub timeout: Duration,
    /// Certificates to trust for `https://` (`None`: the system's).
    pub ca_file: Option<PathBuf>,
}

/// Where the bus is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusAddr {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Whether the bus serves TLS.
    pub tls: bool,
}

impl std::fmt::Display for BusAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The default bus: `$EXOCOM_HOST` (else `localhost`) and `$EXOCOM_PORT`
/// (else 3100).
pub fn default_bus(lookup: impl Fn(&str) -> Option<String>) -> String {
    let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let host = var("EXOCOM_HOST").unwrap_or_else(|| "localhost".to_owned());
    let port = var("EXOCOM_PORT").unwrap_or_else(|| crate::run::DEFAULT_PORT.to_string());
    format!("{}:{}", host.trim(), port.trim())
}

/// Reads `host:port`, `http://host:port`, `ws://host:port/services`,
/// `https://…` or `wss://…` (a missing port is 80 for http/ws, 443 for
/// https/wss, 3100 without a scheme).
pub fn parse_bus(text: &str) -> Result<BusAddr, String> {
    let text = text.trim();
    let (tls, rest, default_port) = match text.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => (false, rest, 80),
            "https" | "wss" => (true, rest, 443),
            other => {
                return Err(format!(
                    "--bus: unknown scheme '{other}' in '{text}' (use http, ws, https or wss)"
                ));
            }
        },
        None => (false, text, crate::run::DEFAULT_PORT),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("--bus: unclosed '[' in '{text}'"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("--bus: no host in '{text}'"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("--bus: '{p}' is not a port number (in '{text}')"))?,
        None => default_port,
    };
    Ok(BusAddr {
        host: host.to_owned(),
        port,
        tls,
    })
}

/// One sample of `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// The labels, in order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// The samples of one read of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Every sample line.
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the Prometheus text format (comments skipped, lines that do
    /// not parse ignored).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Metrics { samples }
    }

    /// The samples of one metric.
    pub fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The value of an unlabelled metric.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.of(name).find(|s| s.labels.is_empty()).map(|s| s.value)
    }

    /// The value of `name` whose `key` label is `value`.
    pub fn labelled(&self, name: &str, key: &str, value: &str) -> Option<f64> {
        self.of(name)
            .find(|s| s.label(key) == Some(value))
            .map(|s| s.value)
    }
}

impl Sample {
    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut s) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = s.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = s.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim().to_owned(), value));
            s = &after[end + 1..];
            s = s.strip_prefix(',').unwrap_or(s);
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// `GET path` on the bus: (status code, body).
pub(crate) async fn get(
    addr: &BusAddr,
    path: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect((addr.host.as_str(), addr.port))
        .await
        .map_err(|e| e.to_string())?;
    let mut stream: Box<dyn Io> = match tls {
        Some(connector) => {
            let name = rustls_pki_types::ServerName::try_from(addr.host.clone())
                .map_err(|e| format!("'{}' is not a TLS server name: {e}", addr.host))?;
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?,
            )
        }
        None => Box::new(tcp),
    };
    let host = if addr.host.contains(':') {
        format!("[{}]", addr.host)
    } else {
        addr.host.clone()
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        addr.port
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "the answer is not HTTP".to_owned())?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "the answer has no HTTP status".to_owned())?;
    Ok((code, body.to_owned()))
}

/// What one role does, from the routes and `clients`.
#[derive(Debug, Default)]
struct RoleRow {
    instances: u64,
    sends: Vec<String>,
    receives: Vec<String>,
    in_routes: bool,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn roles(config: &Value) -> BTreeMap<String, RoleRow> {
    let mut rows: BTreeMap<String, RoleRow> = BTreeMap::new();
    if let Some(routes) = config["routes"].as_object() {
        for (role, route) in routes {
            let row = rows.entry(role.clone()).or_default();
            row.in_routes = true;
            row.sends = strings(&route["sends"]);
            row.receives = strings(&route["receives"]);
        }
    }
    if let Some(clients) = config["clients"].as_array() {
        for client in clients {
            if let Some(role) = client["role"].as_str() {
                rows.entry(role.to_owned()).or_default().instances +=
                    client["instances"].as_u64().unwrap_or(0);
            }
        }
    }
    rows
}

/// A table with left-aligned text and right-aligned numbers.
pub(crate) fn table(out: &mut String, header: &[&str], right: &[bool], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i] - cell.chars().count();
            if right[i] {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                if i + 1 < cells.len() {
                    text.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(
        out,
        &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
    );
    for row in rows {
        line(out, row);
    }
}

pub(crate) fn list(names: &[String]) -> String {
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(", ")
    }
}

fn rate(delta: f64, seconds: f64) -> String {
    if seconds > 0.0 {
        format!("{:.1}", (delta / seconds).max(0.0))
    } else {
        "-".to_owned()
    }
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

/// The report: `config` is `/config.json`; `metrics` two reads of
/// `/metrics` `seconds` apart (`None`: the bus serves no metrics).
pub fn render(
    bus: &BusAddr,
    config: &Value,
    metrics: Option<(&Metrics, &Metrics)>,
    seconds: f64,
) -> String {
    let mut out = String::new();
    let rows = roles(config);
    let connected: u64 = rows.values().map(|r| r.instances).sum();
    let _ = write!(out, "ExoCom at {bus}");
    if let Some(up) = metrics.and_then(|(_, m)| m.value("exocom_uptime_seconds")) {
        let up = up as u64;
        let _ = write!(
            out,
            ", up {}h {:02}m {:02}s",
            up / 3600,
            up / 60 % 60,
            up % 60
        );
    }
    let _ = writeln!(
        out,
        ": {} roles, {connected} instances connected\n",
        rows.len()
    );
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(role, r)| {
            let mut name = role.clone();
            if !r.in_routes {
                name.push_str(" (not in the routes)");
            }
            vec![
                name,
                r.instances.to_string(),
                list(&r.sends),
                list(&r.receives),
            ]
        })
        .collect();
    table(
        &mut out,
        &["ROLE", "INSTANCES", "SENDS", "RECEIVES"],
        &[false, true, false, false],
        &table_rows,
    );
    let Some((before, after)) = metrics else {
        out.push_str("\nrates: the bus serves no /metrics (an ExoCom without metrics)\n");
        return out;
    };

    out.push('\n');
    let routed = "exocom_messages_routed_total";
    let key = |s: &Sample| {
        (
            s.label("message").unwrap_or("").to_owned(),
            s.label("role").unwrap_or("").to_owned(),
        )
    };
    let earlier: BTreeMap<(String, String), f64> =
        before.of(routed).map(|s| (key(s), s.value)).collect();
    let mut rate_rows = Vec::new();
    let (mut total_now, mut total_before) = (0.0, 0.0);
    for s in after.of(routed) {
        let k = key(s);
        let was = earlier.get(&k).copied().unwrap_or(0.0);
        total_now += s.value;
        total_before += was;
        if s.value == 0.0 && k.0 == "(other)" {
            continue;
        }
        rate_rows.push(vec![k.0, k.1, rate(s.value - was, seconds), count(s.value)]);
    }
    table(
        &mut out,
        &["MESSAGE", "TO ROLE", "PER SECOND", "TOTAL"],
        &[false, false, true, true],
        &rate_rows,
    );

    let delta = |name: &str| {
        let now = after.value(name).unwrap_or(0.0);
        (now, now - before.value(name).unwrap_or(0.0))
    };
    let refused = "exocom_messages_refused_total";
    let refused_now: f64 = after.of(refused).map(|s| s.value).sum();
    let refused_before: f64 = before.of(refused).map(|s| s.value).sum();
    let (frames_in, frames_in_d) = delta("exocom_frames_received_total");
    let (frames_out, frames_out_d) = delta("exocom_frames_sent_total");
    let _ = writeln!(
        out,
        "\ntotal: routed {}/s ({} in all), refused {}/s ({} in all); frames in {}/s ({}), out {}/s ({})",
        rate(total_now - total_before, seconds),
        count(total_now),
        rate(refused_now - refused_before, seconds),
        count(refused_now),
        rate(frames_in_d, seconds),
        count(frames_in),
        rate(frames_out_d, seconds),
        count(frames_out),
    );
    let reasons: Vec<String> = after
        .of(refused)
        .filter(|s| s.value > 0.0)
        .map(|s| {
            let reason = s.label("reason").unwrap_or("?");
            let was = before.labelled(refused, "reason", reason).unwrap_or(0.0);
            format!(
                "{reason} {} ({}/s)",
                count(s.value),
                rate(s.value - was, seconds)
            )
        })
        .collect();
    if !reasons.is_empty() {
        let _ = writeln!(out, "refused by reason: {}", reasons.join(", "));
    }
    let unregistered = after
        .value("exocom_unregistered_connections")
        .unwrap_or(0.0);
    let queues: Vec<String> = after
        .of("exocom_queue_depth")
        .filter(|s| s.value > 0.0)
        .map(|s| {
            let role = s.label("role").unwrap_or("?");
            let max = after
                .labelled("exocom_queue_depth_max", "role", role)
                .unwrap_or(0.0);
            format!("{role} {} (fullest {})", count(s.value), count(max))
        })
        .collect();
    let _ = writeln!(
        out,
        "connections: {connected} registered, {} not registered; queued frames: {}",
        count(unregistered),
        if queues.is_empty() {
            "none".to_owned()
        } else {
            queues.join(", ")
        }
    );
    let held = after.value("exocom_held_messages").unwrap_or(0.0);
    if held > 0.0 {
        let _ = writeln!(
            out,
            "held for roles that have not registered yet (startup grace): {}",
            count(held)
        );
    }
    let names: BTreeSet<&str> = after
        .of(routed)
        .filter_map(|s| s.label("message"))
        .collect();
    if names.is_empty() {
        out.push_str("(no routes: nothing to route)\n");
    }
    out
}

/// Runs `exo status`; returns the exit code (1 when the bus cannot be
/// read).
pub async fn status(args: StatusArgs) -> i32 {
    match status_text(&args).await {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("exo status: {e}");
            1
        }
    }
}

/// The report `exo status` prints.
pub async fn status_text(args: &StatusArgs) -> Result<String, String> {
    let bus = parse_bus(&args.bus)?;
    let tls = if bus.tls {
        let config = exoservice::bus::tls::client_config(args.ca_file.as_deref())
            .map_err(|e| e.to_string())?;
        Some(tokio_rustls::TlsConnector::from(Arc::clone(&config)))
    } else {
        None
    };
    let fetch = |path: &'static str| {
        let (bus, tls) = (&bus, tls.as_ref());
        async move {
            match tokio::time::timeout(args.timeout, get(bus, path, tls)).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e)) => Err(format!(
                    "cannot reach the bus at {bus} ({e}); is exocom running there? (set --bus, or EXOCOM_HOST and EXOCOM_PORT)"
                )),
                Err(_) => Err(format!(
                    "the bus at {bus} did not answer {path} within {:?}",
                    args.timeout
                )),
            }
        }
    };
    let (code, body) = fetch("/config.json").await?;
    if code != 200 {
        return Err(format!(
            "{bus}/config.json answered HTTP {code}: is this an ExoCom bus?"
        ));
    }
    let config: Value =
        serde_json::from_str(&body).map_err(|e| format!("{bus}/config.json is not JSON: {e}"))?;
    let (code, first) = fetch("/metrics").await?;
    if code != 200 {
        return Ok(render(&bus, &config, None, 0.0));
    }
    let started = Instant::now();
    tokio::time::sleep(args.interval).await;
    let (code, second) = fetch("/metrics").await?;
    let seconds = started.elapsed().as_secs_f64();
    // Re-read the topology at the end of the window, so both are current.
    let config = match fetch("/config.json").await {
        Ok((200, body)) => serde_json::from_str(&body).unwrap_or(config),
        _ => config,
    };
    if code != 200 {
        return Ok(render(&bus, &config, None, 0.0));
    }
    let (before, after) = (Metrics::parse(&first), Metrics::parse(&second));
    Ok(render(&bus, &config, Some((&before, &after)), seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_of_a_bus_address() {
        let addr = |h: &str, p: u16, tls: bool| BusAddr {
            host: h.into(),
            port: p,
            tls,
        };
        assert_eq!(
            parse_bus("localhost:3100"),
            Ok(addr("localhost", 3100, false))
        );
        assert_eq!(parse_bus("bus"), Ok(addr("bus", 3100, false)));
        assert_eq!(parse_bus("http://bus"), Ok(addr("bus", 80, false)));
        assert_eq!(
            parse_bus("ws://10.0.0.1:4000/services"),
            Ok(addr("10.0.0.1", 4000, false))
        );
        assert_eq!(
            parse_bus("wss://bus.example"),
            Ok(addr("bus.example", 443, true))
        );
        assert_eq!(parse_bus("https://[::1]:9"), Ok(addr("::1", 9, true)));
        assert!(parse_bus("ftp://bus").is_err());
        assert!(parse_bus("bus:http").is_err());
        assert!(parse_bus(":3100").is_err());
        assert_eq!(
            default_bus(|n| (n == "EXOCOM_PORT").then(|| "4100".into())),
            "localhost:4100"
        );
    }

    #[test]
    fn parses_samples_with_escaped_labels() {
        let m = Metrics::parse(
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{message=\"a \\\"b\\\"\",role=\"r\"} 3\nup 1\nbad line\n",
        );
        assert_eq!(m.labelled("x_total", "message", "a \"b\""), Some(3.0));
        assert_eq!(m.value("up"), Some(1.0));
        assert_eq!(m.samples.len(), 2);
    }

    #[test]
    fn renders_roles_and_rates() {
        let config: Value = serde_json::from_str(
            r#"{"clients":[{"role":"ping","instances":2}],"routes":{"ping":{"receives":["ping"],"sends":["pong"]},"web":{"receives":["pong"],"sends":["ping"]}}}"#,
        )
        .unwrap();
        let before =
            Metrics::parse("exocom_messages_routed_total{message=\"ping\",role=\"ping\"} 10\n");
        let after = Metrics::parse(
            "exocom_messages_routed_total{message=\"ping\",role=\"ping\"} 30\nexocom_messages_refused_total{reason=\"not_allowed\"} 4\n",
        );
        let text = render(
            &parse_bus("localhost:1").unwrap(),
            &config,
            Some((&before, &after)),
            2.0,
        );
        assert!(text.contains("2 roles, 2 instances connected"), "{text}");
        assert!(text.contains("\nping          2  pong   ping\n"), "{text}");
        assert!(text.contains("\nweb           0  ping   pong\n"), "{text}");
        assert!(
            text.contains("\nping     ping           10.0     30\n"),
            "{text}"
        );
        assert!(
            text.contains("refused by reason: not_allowed 4 (2.0/s)"),
            "{text}"
        );
    }
}
