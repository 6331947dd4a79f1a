//! Shared helpers for hls tests: a real S3 server (moto) on loopback, and a live job that runs
//! real RTP through the transcoder into the packager and uploader.
#![allow(dead_code)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hls::{Packager, PackagerConfig, S3Config, S3Store, Store, TrackInfo, Uploader};
use transcoder::testsrc::{Codec, RtpSource, AUDIO_PT, VIDEO_PT};
use transcoder::{
    AudioInput, Event, RenditionId, TranscodeSpec, Transcoder, VideoCodec, VideoInput,
};

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

pub fn ladder() -> ladders::Ladder {
    transcoder::testsrc::test_ladder()
}

pub fn track_name(r: RenditionId) -> String {
    match r {
        RenditionId::Video(i) => format!("v{i}"),
        RenditionId::Audio => "audio".into(),
    }
}

pub fn tracks(l: &ladders::Ladder) -> Vec<TrackInfo> {
    let mut t: Vec<TrackInfo> = l
        .rungs
        .iter()
        .enumerate()
        .map(|(i, r)| TrackInfo {
            name: format!("v{i}"),
            codecs: r.codecs(),
            resolution: Some((r.width, r.height)),
            frame_rate: Some(r.fps as f64),
            is_audio: false,
        })
        .collect();
    t.push(TrackInfo {
        name: "audio".into(),
        codecs: l.audio.codecs().into(),
        resolution: None,
        frame_rate: None,
        is_audio: true,
    });
    t
}

/// Runs `seconds` of live RTP through transcoder -> packager -> uploader -> `store`, then ends
/// the broadcast (VOD). `during(t)` is called about every 100 ms with the elapsed time.
pub async fn live_job(
    store: Arc<Store>,
    prefix: &str,
    seconds: u64,
    mut during: impl FnMut(Duration),
) -> Uploader {
    let l = ladder();
    let uploader = Uploader::spawn(store, 64);
    let mut packager = Packager::new(
        PackagerConfig {
            prefix: prefix.into(),
            epoch: "e1".into(),
            segment_target: 2.0,
            part_target: 0.5,
            window: 6,
            delete_old: false,
        },
        tracks(&l),
    );
    let spec = TranscodeSpec::new(
        l,
        Some(VideoInput {
            codec: VideoCodec::Vp8,
            payload_type: VIDEO_PT,
        }),
        Some(AudioInput {
            payload_type: AUDIO_PT,
        }),
    );
    let (tc, mut rx) = Transcoder::start(spec).expect("transcoder");
    let tc = Arc::new(tc);
    // Feed RTP on a blocking thread, as the egress would from the SFU.
    let feeder = {
        let tc = tc.clone();
        tokio::task::spawn_blocking(move || {
            let src = RtpSource::start(Codec::Vp8, 640, 360).expect("source");
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(seconds) {
                let mut idle = true;
                while let Some(p) = src.next_video() {
                    let _ = tc.push_video(&p);
                    idle = false;
                }
                while let Some(p) = src.next_audio() {
                    let _ = tc.push_audio(&p);
                    idle = false;
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            tc.finish(Duration::from_secs(10)).expect("drain");
        })
    };
    let start = Instant::now();
    let mut last_tick = Instant::now();
    let mut masters_at = 0;
    loop {
        let ev = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
        if last_tick.elapsed() >= Duration::from_millis(100) {
            last_tick = Instant::now();
            during(start.elapsed());
        }
        let ev = match ev {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(_) => continue,
        };
        let objs = match ev {
            Event::Init(i) => packager.on_init(&track_name(i.rendition), i.data),
            Event::Part(p) => {
                let mut o = packager.on_part(
                    &track_name(p.rendition),
                    p.independent,
                    p.duration,
                    p.wallclock,
                    p.data,
                );
                // The master's measured bandwidth is refreshed every few segments.
                if p.independent && p.rendition == RenditionId::Audio {
                    masters_at += 1;
                    if masters_at % 2 == 1 {
                        o.extend(packager.masters());
                    }
                }
                o
            }
            Event::Error { element, message } => panic!("transcoder error {element}: {message}"),
            Event::Finished => break,
            _ => Vec::new(),
        };
        for o in objs {
            uploader.put(o).await;
        }
    }
    feeder.await.expect("feeder");
    for o in packager.finish() {
        uploader.put(o).await;
    }
    uploader.flush().await;
    uploader
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
