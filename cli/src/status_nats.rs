//! `exo status --nats URL --app DIR`: the live state of an application on
//! NATS. Every running instance answers a presence probe
//! (`exo.<app>.presence`); the application's stream tells what waits for
//! each role that takes messages at-least-once, what is being handled, and
//! how many dead letters there are. Prints each role with its instances and
//! what it sends and receives, the instances, and the at-least-once queues.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, stream};
use exoservice::config::NatsSettings;
use exoservice::transport::nats::connect::connect_once;
use exoservice::transport::nats::presence::{Presence, probe};
use exoservice::transport::nats::subjects::{
    dead_letter_subject, durable_subject, stream_name, stream_subjects,
};
use futures_util::StreamExt;

use crate::send::NatsFlags;
use crate::status::{list, table};

/// Runs `exo status --nats`: the settings are those of the environment
/// with `flags` in place of their variables; instances answer within
/// `wait`; connecting and each request may take `timeout`. Returns the exit
/// code (1 when NATS cannot be read, 2 for wrong settings).
pub async fn status(flags: &NatsFlags, wait: Duration, timeout: Duration) -> i32 {
    let settings = match flags.tool_settings(&exoservice::config::Env::process()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("exo status: {e}");
            return 2;
        }
    };
    let gathered = async {
        let client = connect_once(&settings, "exo-status", timeout).await?;
        let limit = wait + timeout.saturating_mul(3);
        tokio::time::timeout(limit, gather(&client, &settings, wait, timeout))
            .await
            .map_err(|_| {
                format!(
                    "NATS at {} did not answer within {limit:?}",
                    settings.display_url()
                )
            })?
    };
    match gathered.await {
        Ok(status) => {
            print!("{}", render(&status));
            0
        }
        Err(e) => {
            eprintln!("exo status: {e}");
            1
        }
    }
}

/// What an application's at-least-once role has in the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Queue {
    /// Copies stored for the role (waiting or being handled).
    pub stored: u64,
    /// Copies handed to an instance and not yet settled (`None`: the role's
    /// consumer does not exist yet: no instance of it ever started).
    pub in_progress: Option<u64>,
    /// Copies handed out more than once so far.
    pub redelivered: Option<u64>,
    /// Dead letters of the role.
    pub dead_letters: u64,
}

/// What `exo status --nats` found.
#[derive(Debug, Clone)]
pub struct NatsStatus {
    /// The server(s), credentials hidden.
    pub url: String,
    /// The application's name.
    pub app: String,
    /// The application's routes.
    pub routes: exoservice::routes::Routes,
    /// The instances that answered, by role and instance.
    pub instances: Vec<Presence>,
    /// What the application's stream holds.
    pub queues: Queues,
}

/// What the application's stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queues {
    /// The queue of each role that takes messages at-least-once (by the
    /// routes, or by what is stored for it).
    Roles(BTreeMap<String, Queue>),
    /// The application has no stream yet.
    NoStream,
    /// JetStream cannot be asked (not enabled on the server or for the
    /// account); why.
    Unavailable(String),
}

/// Asks the instances who is online (answers within `wait`) and reads the
/// application's stream (each request within `timeout`).
pub async fn gather(
    client: &Client,
    settings: &NatsSettings,
    wait: Duration,
    timeout: Duration,
) -> Result<NatsStatus, String> {
    let app = &settings.app;
    let instances = probe(client, app, wait).await?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(timeout);
    let queues = match js.get_stream(stream_name(app)).await {
        Ok(stream) => Queues::Roles(queues(&stream, settings).await?),
        Err(e) if crate::dead_letters::stream_missing(&e) => Queues::NoStream,
        // No JetStream (a server without it, or an account without it):
        // services with only at-most-once messages run so.
        Err(e) => Queues::Unavailable(e.to_string()),
    };
    Ok(NatsStatus {
        url: settings.display_url(),
        app: app.clone(),
        routes: (*settings.routes).clone(),
        instances,
        queues,
    })
}

/// The queue of each role that takes messages at-least-once.
async fn queues(
    stream: &stream::Stream,
    settings: &NatsSettings,
) -> Result<BTreeMap<String, Queue>, String> {
    let app = &settings.app;
    let mut counts = BTreeMap::new();
    let mut subjects = stream
        .info_with_subjects(stream_subjects(app))
        .await
        .map_err(|e| {
            format!(
                "cannot read the subjects of stream {}: {e}",
                stream_name(app)
            )
        })?;
    while let Some(entry) = subjects.next().await {
        let (subject, n) = entry.map_err(|e| {
            format!(
                "cannot read the subjects of stream {}: {e}",
                stream_name(app)
            )
        })?;
        counts.insert(subject, n as u64);
    }
    // The roles that take messages at-least-once by the routes, and those
    // something is stored for (without routes, only these).
    let stored_for = |subject: &str| {
        let durable = durable_subject(app, "");
        let dead = dead_letter_subject(app, "");
        subject
            .strip_prefix(durable.as_str())
            .or_else(|| subject.strip_prefix(dead.as_str()))
            .map(str::to_owned)
    };
    let roles: BTreeSet<String> = settings
        .routes
        .roles
        .iter()
        .filter(|(_, own)| !own.at_least_once.is_empty())
        .map(|(role, _)| role.clone())
        .chain(counts.keys().filter_map(|s| stored_for(s)))
        .collect();
    let mut queues = BTreeMap::new();
    for role in &roles {
        let dead_letters = counts
            .get(&dead_letter_subject(app, role))
            .copied()
            .unwrap_or(0);
        let consumer = stream.consumer_info(role).await.ok();
        queues.insert(
            role.clone(),
            Queue {
                stored: counts
                    .get(&durable_subject(app, role))
                    .copied()
                    .unwrap_or(0),
                in_progress: consumer.as_ref().map(|c| c.num_ack_pending as u64),
                redelivered: consumer.as_ref().map(|c| c.num_redelivered as u64),
                dead_letters,
            },
        );
    }
    Ok(queues)
}

/// The report.
pub fn render(status: &NatsStatus) -> String {
    let mut out = String::new();
    let mut by_role: BTreeMap<&str, Vec<&Presence>> = BTreeMap::new();
    for p in &status.instances {
        by_role.entry(&p.role).or_default().push(p);
    }
    let roles: BTreeSet<&str> = status
        .routes
        .roles
        .keys()
        .map(String::as_str)
        .chain(by_role.keys().copied())
        .collect();
    let _ = writeln!(
        out,
        "NATS at {}, application {}: {} roles, {} instances online\n",
        status.url,
        status.app,
        roles.len(),
        status.instances.len()
    );
    let rows: Vec<Vec<String>> = roles
        .iter()
        .map(|role| {
            let own = status.routes.roles.get(*role);
            let mut name = (*role).to_owned();
            if own.is_none() && !status.routes.roles.is_empty() {
                name.push_str(" (not in the routes)");
            }
            let receives: Vec<String> = own
                .map(|o| {
                    o.receives
                        .iter()
                        .map(|r| {
                            if o.at_least_once.contains(r) {
                                format!("{r}*")
                            } else {
                                r.clone()
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                by_role.get(role).map_or(0, Vec::len).to_string(),
                list(own.map(|o| o.sends.as_slice()).unwrap_or_default()),
                list(&receives),
            ]
        })
        .collect();
    table(
        &mut out,
        &["ROLE", "INSTANCES", "SENDS", "RECEIVES"],
        &[false, true, false, false],
        &rows,
    );
    if rows.iter().any(|r| r[3].contains('*')) {
        out.push_str("(* received at-least-once)\n");
    }
    if status.routes.roles.is_empty() {
        out.push_str(
            "(no routes given: name the application with --app DIR or EXOSERVICE_APPLICATION to see what each role sends and receives)\n",
        );
    }

    out.push('\n');
    if status.instances.is_empty() {
        out.push_str("no instance answered\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .instances
            .iter()
            .map(|p| {
                vec![
                    p.instance.clone(),
                    p.role.clone(),
                    to_millis(&p.since),
                    p.version.clone(),
                    if p.draining { "draining" } else { "running" }.to_owned(),
                ]
            })
            .collect();
        table(
            &mut out,
            &["INSTANCE", "ROLE", "ONLINE SINCE", "VERSION", "STATE"],
            &[false, false, false, false, false],
            &rows,
        );
    }

    out.push('\n');
    match &status.queues {
        Queues::Unavailable(why) => {
            let _ = writeln!(
                out,
                "JetStream is not available ({why}): services with at-least-once messages cannot run here"
            );
        }
        Queues::NoStream => {
            let _ = writeln!(
                out,
                "no stream {} yet: no service of the application takes messages at-least-once",
                stream_name(&status.app)
            );
        }
        Queues::Roles(queues) if queues.is_empty() => {
            out.push_str("no role takes messages at-least-once\n");
        }
        Queues::Roles(queues) => {
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            let rows: Vec<Vec<String>> = queues
                .iter()
                .map(|(role, q)| {
                    vec![
                        role.clone(),
                        q.stored.to_string(),
                        opt(q.in_progress),
                        opt(q.redelivered),
                        q.dead_letters.to_string(),
                    ]
                })
                .collect();
            let _ = writeln!(out, "at-least-once, stream {}:", stream_name(&status.app));
            table(
                &mut out,
                &[
                    "ROLE",
                    "STORED",
                    "IN PROGRESS",
                    "REDELIVERED",
                    "DEAD LETTERS",
                ],
                &[false, true, true, true, true],
                &rows,
            );
            if queues.values().any(|q| q.in_progress.is_none()) {
                out.push_str(
                    "(-: the role's consumer does not exist yet; no instance of it started)\n",
                );
            }
            if queues.values().any(|q| q.dead_letters > 0) {
                out.push_str("(see them with: exo dead-letters list)\n");
            }
        }
    }
    out
}

/// An RFC 3339 time with at most three digits of the second's fraction.
fn to_millis(time: &str) -> String {
    match time.split_once('.') {
        Some((head, rest)) => {
            let digits: String = rest
                .chars()
                .take_while(char::is_ascii_digit)
                .take(3)
                .collect();
            let zone: String = rest.chars().skip_while(char::is_ascii_digit).collect();
            format!("{head}.{digits}{zone}")
        }
        None => time.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(role: &str, instance: &str, draining: bool) -> Presence {
        Presence {
            role: role.into(),
            instance: instance.into(),
            version: "0.1.0".into(),
            since: "2026-01-01T00:00:00Z".into(),
            draining,
        }
    }

    #[test]
    fn renders_roles_instances_and_queues() {
        let routes = exoservice::routes::Routes::from_json(
            r#"{"web": {"sends": ["job"], "receives": ["done"]},
                "worker": {"receives": ["job"], "sends": ["done"], "atLeastOnce": ["job"]}}"#,
        )
        .unwrap();
        let status = NatsStatus {
            url: "nats://u:***@localhost:4222".into(),
            app: "shop".into(),
            routes,
            instances: vec![
                presence("web", "web-0000000a", false),
                presence("worker", "worker-0000000b", false),
                presence("worker", "worker-0000000c", true),
            ],
            queues: Queues::Roles(BTreeMap::from([(
                "worker".to_owned(),
                Queue {
                    stored: 7,
                    in_progress: Some(2),
                    redelivered: Some(1),
                    dead_letters: 3,
                },
            )])),
        };
        let text = render(&status);
        assert!(
            text.starts_with(
                "NATS at nats://u:***@localhost:4222, application shop: 2 roles, 3 instances online\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nworker          2  done   job*\n"),
            "{text}"
        );
        assert!(
            text.contains("\nweb             1  job    done\n"),
            "{text}"
        );
        assert!(text.contains("(* received at-least-once)"), "{text}");
        assert!(
            text.contains("worker-0000000c  worker  2026-01-01T00:00:00Z  0.1.0    draining"),
            "{text}"
        );
        assert!(
            text.contains("\nworker       7            2            1             3\n"),
            "{text}"
        );
        assert!(text.contains("exo dead-letters list"), "{text}");
    }

    #[test]
    fn times_are_shown_to_the_millisecond() {
        assert_eq!(
            to_millis("2026-11-25T18:58:08.421832372Z"),
            "2026-11-25T18:58:08.421Z"
        );
        assert_eq!(
            to_millis("2026-11-25T18:58:08.4Z"),
            "2026-11-25T18:58:08.4Z"
        );
        assert_eq!(to_millis("2026-11-25T18:58:08Z"), "2026-11-25T18:58:08Z");
    }

    #[test]
    fn says_when_nothing_answers_and_there_is_no_stream() {
        let status = NatsStatus {
            url: "nats://localhost:4222".into(),
            app: "shop".into(),
            routes: exoservice::routes::Routes::default(),
            instances: vec![presence("ghost", "ghost-00000001", false)],
            queues: Queues::NoStream,
        };
        let text = render(&status);
        assert!(text.contains("\nghost          1  -      -\n"), "{text}");
        assert!(text.contains("(no routes given"), "{text}");
        let with_routes = NatsStatus {
            routes: exoservice::routes::Routes::from_json(r#"{"web": {"sends": ["x"]}}"#).unwrap(),
            ..status.clone()
        };
        assert!(
            render(&with_routes).contains("ghost (not in the routes)"),
            "{}",
            render(&with_routes)
        );
        assert!(text.contains("no stream EXO_shop yet"), "{text}");
        let empty = NatsStatus {
            instances: vec![],
            ..status
        };
        assert!(
            render(&empty).contains("no instance answered"),
            "{render}",
            render = render(&empty)
        );
        let no_jetstream = NatsStatus {
            queues: Queues::Unavailable("jetstream not enabled".into()),
            ..empty
        };
        let text = render(&no_jetstream);
        assert!(
            text.contains("JetStream is not available (jetstream not enabled)"),
            "{text}"
        );
    }
}
