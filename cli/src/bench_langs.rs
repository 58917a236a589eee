//! The language part of `exo bench`: the ping example of each language
//! (`examples/<lang>-ping`), started as its own process with its
//! `startup` command, measured through the same bus as the Rust handler, or
//! over the same NATS server and app.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use exoservice::config::{Env, ServiceConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where a ping example connects.
#[derive(Debug, Clone)]
pub enum PingTarget {
    /// The ExoCom bus on this loopback port.
    Exocom {
        /// The bus's port on 127.0.0.1.
        port: u16,
    },
    /// A NATS server, app and routes (`EXOSERVICE_TRANSPORT=nats`).
    Nats(crate::bench::NatsTarget),
}

/// The languages that have a ping example, in the order they are measured.
pub const LANGUAGES: [&str; 4] = ["rust", "python", "node", "c"];

/// A ping service of some language running as a child process.
pub struct PingProcess {
    child: Child,
    /// The language.
    pub lang: String,
}

/// Where the examples are: `./examples`, else next to the repository the
/// running binary was built in (`target/<profile>/exo` → `examples`).
pub fn examples_dir() -> Option<PathBuf> {
    let here = PathBuf::from("examples");
    if here.is_dir() {
        return Some(here);
    }
    let exe = std::env::current_exe().ok()?;
    let repo = exe.parent()?.parent()?.parent()?;
    let dir = repo.join("examples");
    dir.is_dir().then_some(dir)
}

impl PingProcess {
    /// Starts `examples/<lang>-ping` against `target`, as role `ping`, and
    /// waits until it prints its online text.
    pub async fn start(
        examples: &Path,
        lang: &str,
        target: &PingTarget,
    ) -> Result<PingProcess, String> {
        let dir = examples.join(format!("{lang}-ping"));
        let config = ServiceConfig::load_with(&dir, &Env::empty(), Some("ping"))
            .map_err(|e| e.to_string())?;
        let startup = config
            .startup
            .ok_or_else(|| format!("{}: no startup command", config.file.display()))?;
        let online_text = startup
            .online_text
            .unwrap_or_else(|| crate::run::DEFAULT_ONLINE_TEXT.to_owned());
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&startup.command)
            .current_dir(&dir)
            .env("ROLE", "ping");
        match target {
            PingTarget::Exocom { port } => {
                // The bench's own environment must not move the example to NATS.
                for var in exoservice::config::env::NATS_VARS {
                    command.env_remove(var);
                }
                command
                    .env("EXOCOM_HOST", "127.0.0.1")
                    .env("EXOCOM_PORT", port.to_string());
            }
            PingTarget::Nats(nats) => {
                // Only this bench's settings: none of the shell's NATS
                // variables (its files are given as absolute paths).
                for var in exoservice::config::env::NATS_VARS {
                    command.env_remove(var);
                }
                command
                    .envs(nats.files.iter().map(|(var, path)| (*var, path)))
                    .env("EXOSERVICE_TRANSPORT", "nats")
                    .env("NATS_URL", &nats.url)
                    .env("EXOSERVICE_APP", &nats.app)
                    .env("EXOSERVICE_ROUTES", &nats.routes_json);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", startup.command))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for stream in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(stderr),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let mut seen = Vec::new();
        let online = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = rx.recv().await {
                let hit = line.contains(&online_text);
                seen.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        if online != Ok(true) {
            let tail: Vec<&String> = seen.iter().rev().take(5).collect();
            let tail: Vec<&str> = tail.iter().rev().map(|s| s.as_str()).collect();
            return Err(format!(
                "`{}` did not print {online_text:?} (last output: {})",
                startup.command,
                if tail.is_empty() {
                    "none".to_owned()
                } else {
                    tail.join(" / ")
                }
            ));
        }
        // Keep reading so the child never blocks on a full pipe.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        Ok(PingProcess {
            child,
            lang: lang.to_owned(),
        })
    }

    /// Stops it: SIGTERM to its process group, SIGKILL after 5 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the child's process group; no memory involved.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_err()
            {
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
                let _ = self.child.wait().await;
            }
        }
    }
}
