//! An encoder fed garbage: RTP with valid headers and random payloads. That job ends with a
//! clear error; a job running beside it is unaffected and finishes a playable recording.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use egress::{JobState, RtpPacket, Source, StartRequest};
use hls::{FsStore, Store};
use transcoder::testsrc::{AUDIO_PT, VIDEO_PT};
use transcoder::{AudioInput, VideoCodec, VideoInput};

/// Random-payload RTP at a browser's packet rate, until `for_how_long` passes.
fn garbage(tx: std::sync::mpsc::SyncSender<RtpPacket>, for_how_long: Duration) {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let t = Instant::now();
    let (mut seq, mut ts) = (0u16, 0u32);
    while t.elapsed() < for_how_long {
        for (video, pt, step) in [(true, VIDEO_PT, 3000u32), (false, AUDIO_PT, 960)] {
            let mut p = vec![0x80, 0x80 | pt];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.wrapping_mul(step / 960).to_be_bytes());
            p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            let n = 40 + (rnd() % 900) as usize;
            p.extend((0..n).map(|_| rnd() as u8));
            if tx.send(RtpPacket { video, data: p }).is_err() {
                return;
            }
        }
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(960);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_fails_its_job_and_leaves_the_other_alone() {
    let dir = std::env::temp_dir().join(format!("aula-egress-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::Fs(FsStore::new(&dir)));
    let hooks = HookSink::start();
    let s = egress::HlsSettings {
        webhooks: vec![hooks.url.clone()],
        webhook_secret: "hook-secret".into(),
        ..settings()
    };
    let (e, good) = start_job(store, "good", 24, s);
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    let bad = e
        .start(
            StartRequest {
                room: "bad".into(),
                broadcast: None,
                profile: Some("test".into()),
            },
            Source::Rtp {
                video: Some(VideoInput {
                    codec: VideoCodec::Vp8,
                    payload_type: VIDEO_PT,
                }),
                audio: Some(AudioInput {
                    payload_type: AUDIO_PT,
                }),
                rx,
                idle: Duration::from_secs(5),
                keyframe: None,
                size: None,
            },
        )
        .expect("garbage job starts")
        .id;
    let feeder = std::thread::spawn(move || garbage(tx, Duration::from_secs(40)));
    let b = e.wait(&bad, Duration::from_secs(60)).await.expect("job");
    eprintln!("garbage job: {b:?}");
    assert_eq!(b.state, JobState::Failed, "{b:?}");
    let why = b.error.clone().unwrap_or_default();
    assert!(why.contains("cannot be decoded"), "{why}");
    assert_eq!(b.segments, 0);
    let g = finished(&e, &good).await;
    assert!(g.segments >= 10, "{g:?}");
    check_probe(
        &dir.join("good")
            .join(&good)
            .join("vod.m3u8")
            .to_string_lossy(),
    );
    // Nothing playable came of the garbage: viewers are not sent to an empty playlist.
    assert_eq!(e.broadcast("bad", None).hls, None);
    // Webhooks: both starts, the failure and the end, each signed over its body.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hooks.got.lock().expect("lock").len() < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = hooks.got.lock().expect("lock").clone();
    let mut events: Vec<String> = Vec::new();
    for (head, body) in &got {
        let v: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
        events.push(format!(
            "{} {}",
            v["event"].as_str().unwrap_or(""),
            v["job"]["room"].as_str().unwrap_or("")
        ));
        let sig = egress::Webhooks::signature(b"hook-secret", body);
        assert!(head.contains(&format!("x-aula-signature: {sig}")), "{head}");
    }
    events.sort();
    assert_eq!(
        events,
        [
            "egress_ended good",
            "egress_failed bad",
            "egress_started bad",
            "egress_started good"
        ]
    );
    drop(feeder);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An audio-only broadcast (no video track at all) goes live and its master lists only audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_only_broadcast_goes_live() {
    let dir = std::env::temp_dir().join(format!("aula-egress-audio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let keys = hls::SigningKeys::new("k", [("k".to_string(), b"s".to_vec())]).expect("keys");
    let e = egress::Egress::new(Arc::new(Store::Fs(FsStore::new(&dir))), keys, settings());
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    let id = e
        .start(
            StartRequest {
                room: "radio".into(),
                broadcast: None,
                profile: Some("test".into()),
            },
            Source::Rtp {
                video: None,
                audio: Some(AudioInput {
                    payload_type: AUDIO_PT,
                }),
                rx,
                idle: Duration::from_secs(2),
                keyframe: None,
                size: None,
            },
        )
        .expect("starts")
        .id;
    let sender = std::thread::spawn(move || {
        let src = transcoder::testsrc::RtpSource::start(VideoCodec::Vp8, 320, 180).expect("source");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            while let Some(p) = src.next_audio() {
                let _ = tx.send(RtpPacket {
                    video: false,
                    data: p,
                });
            }
            while src.next_video().is_some() {}
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let s = finished(&e, &id).await;
    sender.join().expect("sender");
    assert!(s.segments >= 3, "{s:?}");
    let master = std::fs::read_to_string(dir.join("radio").join(&id).join("master.m3u8"))
        .expect("master written");
    assert!(
        master.contains("audio.m3u8") && !master.contains("v0.m3u8"),
        "{master}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
