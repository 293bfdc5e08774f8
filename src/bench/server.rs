//! The o2flow under test: `o2flow serve` started as a child process of the
//! harness (the same binary), on a fresh database, and what `/proc` says
//! about it and about the PostgreSQL server.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `o2flow serve`.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub base_url: String,
    /// The admin key the fresh database printed.
    pub key: String,
    /// From spawning to the first `/healthz` answer.
    pub startup: Duration,
}

/// How to start the server.
pub struct Launch<'a> {
    /// The binary to run; this one when `None`.
    pub binary: Option<&'a Path>,
    pub database_url: &'a str,
    pub dir: &'a Path,
    pub webhook_url: &'a str,
    pub log: &'a Path,
}

impl Server {
    /// Starts `o2flow serve` on a free port and waits until it answers.
    ///
    /// # Errors
    /// The process cannot start, prints no key, or does not answer in 30 s.
    pub async fn start(launch: &Launch<'_>) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let exe = match launch.binary {
            Some(binary) => binary.to_path_buf(),
            None => std::env::current_exe().context("finding the o2flow binary")?,
        };
        let log = std::fs::File::create(launch.log)
            .with_context(|| format!("creating {}", launch.log.display()))?;
        let began = Instant::now();
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--database-url")
            .arg(launch.database_url)
            .arg("--workflows")
            .arg(launch.dir.join("workflows"))
            .arg("--templates")
            .arg(launch.dir.join("templates"))
            .arg("--webhook-url")
            .arg(launch.webhook_url)
            .env_remove("O2FLOW_WEBHOOK_SECRET")
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting o2flow serve")?;
        let pid = child.id().context("the server has no pid")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let key = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(key) = line.trim().strip_prefix("export O2FLOW_KEY=") {
                    return Ok(key.to_owned());
                }
            }
            let log = std::fs::read_to_string(launch.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "o2flow serve ended without printing an admin key; the end of {}:\n{}",
                launch.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .await
        .context("waiting for the server's admin key")??;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base_url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        loop {
            if client
                .get(format!("{base_url}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            if began.elapsed() > Duration::from_secs(30) {
                bail!("o2flow serve did not answer /healthz in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Server {
            child,
            pid,
            base_url,
            key,
            startup: began.elapsed(),
        })
    }

    /// Stops the server (SIGKILL: nothing it holds matters after a run).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU time (user + system) of one process, from `/proc/<pid>/stat`.
#[must_use]
pub fn cpu_of(pid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| ticks(&stat))
        .map_or(Duration::ZERO, |t| Duration::from_secs_f64(t / TICKS))
}

/// utime + stime from one `/proc/<pid>/stat` line (fields 14 and 15; the
/// command name in parentheses may hold spaces).
fn ticks(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// CPU time of every process named `postgres` (the server, its backends,
/// WAL writer and checkpointer): the database's share of a run.
#[must_use]
pub fn postgres_cpu() -> Duration {
    let mut total = 0.0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let path = entry.path();
        let is_postgres =
            std::fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim() == "postgres");
        if is_postgres {
            if let Some(t) = std::fs::read_to_string(path.join("stat"))
                .ok()
                .and_then(|s| ticks(&s))
            {
                total += t;
            }
        }
    }
    Duration::from_secs_f64(total / TICKS)
}

/// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
#[must_use]
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_past_a_command_with_spaces() {
        let stat = "42 (tokio rt) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 1 1";
        assert_eq!(ticks(stat), Some(325.0));
        assert_eq!(ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(memory_kib(std::process::id(), "VmRSS") > 0);
        assert_eq!(memory_kib(std::process::id(), "NoSuchField"), 0);
    }
}
