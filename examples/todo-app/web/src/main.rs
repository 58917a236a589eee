//! `web`, the todo app's HTTP front. Every HTTP call becomes a `request`
//! over the bus; the answer comes back as JSON.
//!
//! - `GET /` — a page that lists a person's todos and adds one
//! - `GET /todos/{user}` — `todo.list` → `todo.listing`
//! - `POST /todos/{user}` with `{"text": "..."}` — makes sure the user exists
//!   (`users.get`, else `users.create`), then `todo.add` → `todo.added`
//! - `DELETE /todos/{user}/{id}` — `todo.delete` → `todo.deleted` or 404
//! - `GET /stats` — `stats.get` → `stats.details`
//!
//! The HTTP port is `WEB_PORT` (default 3000); it listens on `WEB_BIND`
//! (default 127.0.0.1).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get};
use exoservice::{Client, ExoError, Message, Service};
use serde_json::{Value, json};

/// How long one bus request may take before the HTTP call fails with 504.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP answer built from a bus reply or an error.
struct Answer(StatusCode, Value);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<ExoError> for Answer {
    fn from(e: ExoError) -> Answer {
        let status = match e {
            ExoError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        Answer(status, json!({ "error": e.to_string() }))
    }
}

async fn ask(client: &Client, name: &str, payload: Value) -> Result<Message, Answer> {
    Ok(client.request(name, &payload, REQUEST_TIMEOUT).await?)
}

/// The reply's payload with status 200, or `status` with its payload when
/// the reply has another name than `expected`.
fn expect(reply: Message, expected: &str, status: StatusCode) -> Answer {
    if reply.name == expected {
        Answer(StatusCode::OK, reply.payload_value())
    } else {
        Answer(
            status,
            json!({ "error": reply.name, "details": reply.payload_value() }),
        )
    }
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn list(State(client): State<Client>, Path(user): Path<String>) -> Answer {
    match ask(&client, "todo.list", json!({ "owner": user })).await {
        Ok(reply) => expect(reply, "todo.listing", StatusCode::BAD_GATEWAY),
        Err(a) => a,
    }
}

async fn add(
    State(client): State<Client>,
    Path(user): Path<String>,
    body: Option<Json<Value>>,
) -> Answer {
    let text = body
        .as_ref()
        .and_then(|b| b.get("text"))
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    if text.is_empty() {
        return Answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": "send a JSON body {\"text\": \"...\"}" }),
        );
    }
    // The user must exist; create them on first use.
    let found = match ask(&client, "users.get", json!({ "name": user })).await {
        Ok(m) => m,
        Err(a) => return a,
    };
    if found.name == "users.not-found" {
        match ask(&client, "users.create", json!({ "name": user })).await {
            Ok(m) if m.name == "users.created" => {}
            Ok(m) => return expect(m, "users.created", StatusCode::BAD_GATEWAY),
            Err(a) => return a,
        }
    }
    match ask(&client, "todo.add", json!({ "owner": user, "text": text })).await {
        Ok(reply) => {
            let Answer(status, body) = expect(reply, "todo.added", StatusCode::BAD_GATEWAY);
            let status = if status == StatusCode::OK {
                StatusCode::CREATED
            } else {
                status
            };
            Answer(status, body)
        }
        Err(a) => a,
    }
}

async fn remove(State(client): State<Client>, Path((user, id)): Path<(String, String)>) -> Answer {
    let id: Value = id
        .parse::<u64>()
        .map(Value::from)
        .unwrap_or(Value::String(id));
    match ask(&client, "todo.delete", json!({ "owner": user, "id": id })).await {
        Ok(reply) => expect(reply, "todo.deleted", StatusCode::NOT_FOUND),
        Err(a) => a,
    }
}

async fn stats(State(client): State<Client>) -> Answer {
    match ask(&client, "stats.get", json!({})).await {
        Ok(reply) => expect(reply, "stats.details", StatusCode::BAD_GATEWAY),
        Err(a) => a,
    }
}

fn port() -> Result<SocketAddr, String> {
    let port = match std::env::var("WEB_PORT").ok().filter(|v| !v.is_empty()) {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("WEB_PORT must be a port number, not {p:?}"))?,
        None => 3000,
    };
    let bind = std::env::var("WEB_BIND")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into());
    format!("{bind}:{port}")
        .parse()
        .map_err(|_| format!("WEB_BIND must be an IP address, not {bind:?}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr = match port() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("web: {e}");
            return ExitCode::FAILURE;
        }
    };
    let service = match Service::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("web: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("web: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = exoservice::signals::stop_signal();
    let running = match service.start().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("web: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/todos/{user}", get(list).post(add))
        .route("/todos/{user}/{id}", delete(remove))
        .route("/stats", get(stats))
        .with_state(running.client());
    println!("web: the todo app is at http://{addr}/");
    let stopper = running.stopper();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop.await;
        stopper.stop();
    });
    if let Err(e) = server.await {
        eprintln!("web: HTTP server failed: {e}");
    }
    running.wait().await;
    ExitCode::SUCCESS
}
