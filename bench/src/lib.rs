//! Benchmarks and load generators: SFU fan-out, collab, ladder, HLS latency. Shared here: an
//! `aula serve` started for a bench, with its tokens, metrics and CPU time.
#![deny(unsafe_code)]

pub mod collab_client;
pub mod webrtc_client;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

/// The bench's time base (first call starts it).
pub fn clock() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Microseconds since `clock()` started: what clients stamp into what they send.
pub fn micros() -> u64 {
    clock().elapsed().as_micros() as u64
}

/// `aula serve` on loopback with a throwaway storage directory.
pub struct AulaServer {
    child: Child,
    pub base: String,
    /// The UDP media address (`host:port`).
    pub media: String,
    env: Vec<(String, String)>,
    aula: String,
    dir: std::path::PathBuf,
}

impl AulaServer {
    /// Starts `aula serve` (extra `AULA_*` settings in `extra`) and waits for its address.
    pub fn start(aula: &str, extra: &[(&str, &str)]) -> Result<AulaServer> {
        AulaServer::start_logged(aula, extra, None)
    }

    /// As `start`, with the server's log (stderr) written to `log` instead of inherited.
    pub fn start_logged(
        aula: &str,
        extra: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Result<AulaServer> {
        let dir = std::env::temp_dir().join(format!("aula-bench-{}", std::process::id()));
        let mut env = vec![
            ("AULA_HTTP__BIND".to_string(), "127.0.0.1:0".to_string()),
            ("AULA_MEDIA__BIND".to_string(), "127.0.0.1:0".to_string()),
            ("AULA_STORAGE__DIR".to_string(), dir.display().to_string()),
            ("RUST_LOG".to_string(), "warn".to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            ),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(aula)
            .arg("serve")
            .envs(env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| {
                format!("starting {aula} (build it with cargo build --release -p aula)")
            })?;
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(out).lines();
        let (base, media) = loop {
            let line = lines.next().ok_or_else(|| anyhow!("aula exited"))??;
            if let Some(rest) = line.strip_prefix("aula listening http=") {
                let mut words = rest.split(' ');
                let base = words.next().unwrap_or_default().to_string();
                let media = words
                    .find_map(|w| w.strip_prefix("media="))
                    .unwrap_or_default()
                    .to_string();
                break (base, media);
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(AulaServer {
            child,
            base,
            media,
            env,
            aula: aula.to_string(),
            dir,
        })
    }

    /// A token from `aula token` with these flags (`--publish`, `--publish-data`, ...).
    pub fn token(&self, room: &str, identity: &str, flags: &[&str]) -> Result<String> {
        let out = Command::new(&self.aula)
            .args(["token", "--room", room, "--identity", identity])
            .args(flags)
            .envs(self.env.iter().cloned())
            .output()?;
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime of the server process, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(self.child.id())
    }

    pub fn metric(&self, name: &str) -> Result<u64> {
        let body = ureq::get(format!("{}/metrics", self.base))
            .call()?
            .body_mut()
            .read_to_string()?;
        body.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name} "))
                    .and_then(|v| v.parse().ok())
            })
            .ok_or_else(|| anyhow!("no metric {name}"))
    }
}

impl Drop for AulaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit(')').next().ok_or_else(|| anyhow!("bad stat"))?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f
        .get(11)
        .ok_or_else(|| anyhow!("bad stat"))?
        .parse::<f64>()?
        + f.get(12)
            .ok_or_else(|| anyhow!("bad stat"))?
            .parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// CPU time the hypervisor gave to other guests ("steal") and all CPU time, in ticks, from
/// /proc/stat: a bench run with much steal measured a busy host, not the code.
pub fn host_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .filter(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("bad /proc/stat"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    Ok((f.get(7).copied().unwrap_or(0), f.iter().sum()))
}

/// Steal between two `host_ticks` readings, as a share of all CPU time.
pub fn steal_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1).max(1);
    after.0.saturating_sub(before.0) as f64 / total as f64
}
