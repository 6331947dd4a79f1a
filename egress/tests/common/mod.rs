//! Shared helpers for egress tests: a real S3 server (moto) on loopback, test-pattern jobs, and
//! ffprobe.
#![allow(dead_code)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egress::{Egress, HlsSettings, JobState, JobStatus, Source, StartRequest};
use hls::{S3Config, S3Store, SigningKeys, Store};

/// `moto[server]` (PyPI) on a free loopback port, killed on drop.
pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (scripts/install-deps.sh installs moto[server])");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { port, child }
    }

    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            path_style: true,
        }
    }

    pub async fn store(&self, bucket: &str) -> Store {
        let s = S3Store::new(&self.config(bucket));
        s.ensure_bucket().await.expect("bucket");
        Store::S3(s)
    }

    pub fn url(&self, bucket: &str, key: &str) -> String {
        format!("http://127.0.0.1:{}/{bucket}/{key}", self.port)
    }

    /// The server's pid: `signal(pid, "-STOP")` freezes it (connections hang, as with a
    /// stalled or unreachable bucket), `"-CONT"` thaws it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

impl Drop for Moto {
    fn drop(&mut self) {
        signal(self.child.id(), "-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a test-pattern job of `seconds` through the egress service (transcoder -> packager ->
/// uploader -> `store`) with the small test ladder. Returns the service and the job id (also
/// the broadcast id: objects are under `{room}/{id}/`); `wait` for its end.
pub fn start_job(
    store: Arc<Store>,
    room: &str,
    seconds: u64,
    settings: HlsSettings,
) -> (Egress, String) {
    let keys = SigningKeys::new("k1", [("k1".to_string(), b"test-secret".to_vec())]).expect("keys");
    let e = Egress::new(store, keys, settings);
    let status = e
        .start(
            StartRequest {
                room: room.into(),
                broadcast: None,
                profile: Some("test".into()),
            },
            Source::TestPattern {
                seconds: Some(seconds),
                width: 640,
                height: 360,
            },
        )
        .expect("job starts");
    (e, status.id)
}

/// Settings for tests: a short upload queue, so a stalled bucket is felt quickly.
pub fn settings() -> HlsSettings {
    HlsSettings {
        upload_queue: 64,
        ..HlsSettings::default()
    }
}

/// Waits for the job's end; panics if it failed.
pub async fn finished(e: &Egress, id: &str) -> JobStatus {
    let s = e.wait(id, Duration::from_secs(120)).await.expect("job");
    assert_eq!(s.state, JobState::Ended, "{s:?}");
    s
}

/// ffprobe's view of a playlist: (codec, width, height) of every stream it finds.
pub fn ffprobe_streams(url: &str) -> Vec<(String, i64, i64)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(url)
        .output()
        .expect("ffprobe (scripts/install-deps.sh installs ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_string(),
                f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
                f.get(2).and_then(|v| v.parse().ok()).unwrap_or(0),
            )
        })
        .collect()
}

/// ffprobe finds every rung of the test ladder (H.264) and the AAC audio in a playlist.
pub fn check_probe(master: &str) {
    let streams = ffprobe_streams(master);
    eprintln!("ffprobe {master}: {streams:?}");
    for (w, h) in [(256, 144), (426, 240), (640, 360)] {
        assert!(
            streams
                .iter()
                .any(|s| s.0 == "h264" && s.1 == w && s.2 == h),
            "no {w}x{h} h264 in {streams:?}"
        );
    }
    assert!(
        streams.iter().any(|s| s.0 == "aac"),
        "no AAC in {streams:?}"
    );
}

/// Requests a [`HookSink`] received: headers (lowercased) and body.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver on loopback.
pub struct HookSink {
    pub url: String,
    pub got: Received,
}

impl HookSink {
    pub fn start() -> HookSink {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let mut r = BufReader::new(conn);
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&lower);
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                g.lock().expect("lock").push((head, body));
                let _ = r
                    .get_mut()
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
            }
        });
        HookSink { url, got }
    }
}
