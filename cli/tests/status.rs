//! `exo status` against a running `exocom` process with live traffic: it
//! prints the roles, their instances, what they send and receive, and the
//! message rates; an unreachable bus is a clear error (exit 1).

use std::process::Command;
use std::time::Duration;

use exo_harness::{Proc, bin, free_port, port_in};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const WAIT: Duration = Duration::from_secs(20);
const ROUTES: &str = r#"{"tester":{"sends":["ping"],"receives":["pong"]},"ping":{"receives":["ping"],"sends":["pong"]},"audit":{"receives":["ping"]}}"#;

/// Runs `exo status` with these arguments and environment; (exit code,
/// stdout, stderr).
async fn exo_status(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(bin("exo"));
    cmd.arg("status")
        .args(args)
        .env_remove("EXOCOM_HOST")
        .env_remove("EXOCOM_PORT")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = timeout(WAIT, cmd.output())
        .await
        .expect("exo status ends in time")
        .expect("exo status runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The words of the first line starting with these words.
fn row<'a>(text: &'a str, start: &[&str]) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() >= start.len() && w[..start.len()] == *start)
        .unwrap_or_else(|| panic!("no row starting with {start:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_roles_and_rates_of_a_running_bus() {
    let mut bus = Proc::spawn(
        Command::new(bin("exocom"))
            .arg("--quiet-routes")
            .env("PORT", "0")
            .env("EXOCOM_BIND", "127.0.0.1")
            .env("EXOCOM_STARTUP_GRACE_MS", "0")
            .env("SERVICE_DATA", ROUTES),
    );
    let port = port_in(&bus.wait_for("ExoCom online at port", WAIT));
    let url = format!("ws://127.0.0.1:{port}/services");
    let connect = |role: &'static str| {
        let url = url.clone();
        async move {
            let (mut ws, _) = timeout(WAIT, tokio_tungstenite::connect_async(url))
                .await
                .unwrap()
                .unwrap();
            let reg = json!({"name": "exocom.register-service", "sender": role, "id": "r", "activityId": "r"});
            ws.send(WsMessage::text(reg.to_string())).await.unwrap();
            ws
        }
    };
    // Two 'ping' instances answer; 'tester' sends a ping every 5 ms for
    // at most 15 s; 'audit' has no instance.
    let mut responders = Vec::new();
    for _ in 0..2 {
        let mut ws = connect("ping").await;
        responders.push(tokio::spawn(async move {
            while let Ok(Some(Ok(WsMessage::Text(t)))) = timeout(WAIT, ws.next()).await {
                let msg: serde_json::Value = serde_json::from_str(&t).unwrap();
                let pong = json!({"name": "pong", "sender": "ping", "id": "p", "activityId": msg["activityId"]});
                if ws.send(WsMessage::text(pong.to_string())).await.is_err() {
                    break;
                }
            }
        }));
    }
    let tester = connect("tester").await;
    let (mut sink, mut stream) = tester.split();
    let sender = tokio::spawn(async move {
        for i in 0..3000 {
            let ping = json!({"name": "ping", "sender": "tester", "id": format!("i{i}"), "activityId": format!("a{i}")});
            if sink.send(WsMessage::text(ping.to_string())).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let drain =
        tokio::spawn(
            async move { while let Ok(Some(Ok(_))) = timeout(WAIT, stream.next()).await {} },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The bus from $EXOCOM_HOST/$EXOCOM_PORT.
    let (code, out, err) = exo_status(
        &["--interval", "1"],
        &[
            ("EXOCOM_HOST", "127.0.0.1".to_owned()),
            ("EXOCOM_PORT", port.to_string()),
        ],
    )
    .await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    println!("{out}");
    assert!(
        out.starts_with(&format!("ExoCom at http://127.0.0.1:{port}")),
        "{out}"
    );
    assert!(out.contains("3 roles, 3 instances connected"), "{out}");
    assert_eq!(row(&out, &["ping", "2"]), ["ping", "2", "pong", "ping"]);
    assert_eq!(row(&out, &["tester", "1"]), ["tester", "1", "ping", "pong"]);
    assert_eq!(row(&out, &["audit", "0"]), ["audit", "0", "-", "ping"]);
    for (message, role) in [("ping", "ping"), ("pong", "tester")] {
        let r = row(&out, &[message, role]);
        let per_second: f64 = r[2].parse().unwrap();
        let total: f64 = r[3].parse().unwrap();
        assert!(
            (20.0..=400.0).contains(&per_second),
            "{message} → {role}: {per_second}/s\n{out}"
        );
        assert!(total >= per_second * 0.5, "{out}");
    }
    let audit = row(&out, &["ping", "audit"]);
    assert_eq!(&audit[2..], ["0.0", "0"], "'audit' has no instance: {out}");
    assert!(out.contains("refused by reason: no_instance"), "{out}");

    // --bus in URL form gives the same topology.
    let (code, out, err) = exo_status(
        &[
            "--bus",
            &format!("ws://127.0.0.1:{port}/services"),
            "--interval",
            "0.2",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(row(&out, &["ping", "2"]), ["ping", "2", "pong", "ping"]);

    sender.abort();
    drain.abort();
    for r in responders {
        r.abort();
    }
    bus.signal("TERM");
    assert_eq!(bus.wait_exit(WAIT), Some(0));
}

#[tokio::test]
async fn an_unreachable_bus_is_a_clear_error() {
    let port = free_port();
    let (code, out, err) = exo_status(&["--bus", &format!("127.0.0.1:{port}")], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(&format!(
            "exo status: cannot reach the bus at http://127.0.0.1:{port}"
        )) && err.contains("is exocom running there?"),
        "{err}"
    );
    let (code, _, err) = exo_status(&["--bus", "ftp://x"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown scheme 'ftp'"), "{err}");
}
