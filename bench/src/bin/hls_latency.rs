//! Glass-to-glass latency of the HLS egress: a live RTP sender (GStreamer test pattern, VP8 +
//! Opus, as a browser sends) feeds an egress job in real time; two viewers read the live media
//! playlist through the signed origin: an LL-HLS viewer with blocking reloads (`_HLS_msn`,
//! `_HLS_part`) and a plain-HLS viewer polling every 100 ms. For every part (LL-HLS) and segment
//! (plain HLS) the bench records when it became listed, minus the wall-clock moment its first
//! frame was sent (EXT-X-PROGRAM-DATE-TIME, which the transcoder stamps from each packet's
//! arrival: in this one process that is the send time; the bench checks that against its own
//! record of the first packet). Prints p50/p95 of both, and the position a player holding back
//! the standard amount (PART-HOLD-BACK for LL-HLS, 3 target durations for HLS) plays at.
#![deny(unsafe_code)]

use std::collections::HashSet;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Parser;
use egress::{Egress, HlsSettings, RtpPacket, Source, StartRequest};
use hls::{FsStore, SigningKeys, Store};
use transcoder::testsrc::{RtpSource, AUDIO_PT, VIDEO_PT};
use transcoder::{AudioInput, VideoCodec, VideoInput};

#[derive(Parser)]
struct Args {
    /// Seconds of live input.
    #[arg(long, default_value_t = 40)]
    seconds: u64,
    /// Ladder profile.
    #[arg(long, default_value = "test")]
    profile: String,
    /// LL-HLS part target (s).
    #[arg(long, default_value_t = 0.5)]
    part: f64,
}

/// Lines of a live playlist: (segment msn, part index or None for the whole segment, start of
/// its first frame as wall-clock ms).
fn listed(text: &str) -> Vec<(u64, Option<u64>, f64)> {
    let mut out = Vec::new();
    let mut seg_start: Option<f64> = None;
    let mut offset = 0.0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            seg_start = chrono::DateTime::parse_from_rfc3339(v)
                .ok()
                .map(|d| d.timestamp_millis() as f64);
            offset = 0.0;
        } else if let Some(a) = line.strip_prefix("#EXT-X-PART:") {
            let dur: f64 = a
                .split(',')
                .find_map(|kv| kv.strip_prefix("DURATION="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            let uri = a.split("URI=\"").nth(1).and_then(|r| r.split('"').next());
            if let (Some(uri), Some(start)) = (uri, seg_start) {
                if let Some((msn, idx)) = part_of(uri) {
                    out.push((msn, Some(idx), start + offset * 1000.0));
                }
            }
            offset += dur;
        } else if !line.starts_with('#') && line.ends_with(".m4s") {
            if let (Some(msn), Some(start)) = (segment_of(line), seg_start) {
                out.push((msn, None, start));
            }
            seg_start = None;
        }
    }
    out
}

/// `v2/{epoch}-{msn}.{part}.m4s` -> (msn, part)
fn part_of(uri: &str) -> Option<(u64, u64)> {
    let stem = uri.rsplit('-').next()?.strip_suffix(".m4s")?;
    let (m, p) = stem.split_once('.')?;
    Some((m.parse().ok()?, p.parse().ok()?))
}

/// `v2/{epoch}-{msn}.m4s` -> msn
fn segment_of(uri: &str) -> Option<u64> {
    uri.rsplit('-').next()?.strip_suffix(".m4s")?.parse().ok()
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = Args::parse();
    let dir = std::env::temp_dir().join(format!("aula-hls-latency-{}", std::process::id()));
    let keys = SigningKeys::new("k", [("k".to_string(), b"bench".to_vec())]).context("keys")?;
    let e = Egress::new(
        Arc::new(Store::Fs(FsStore::new(&dir))),
        keys,
        HlsSettings {
            part_s: a.part,
            ..HlsSettings::default()
        },
    );
    let (tx, rx) = sync_channel(4096);
    let first_sent: Arc<Mutex<Option<f64>>> = Arc::default();
    let sender = {
        let (seconds, first_sent) = (a.seconds, first_sent.clone());
        std::thread::spawn(move || -> Result<()> {
            let src = RtpSource::start_pattern(VideoCodec::Vp8, 640, 360, "smpte")?;
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(seconds) {
                let mut idle = true;
                while let Some(p) = src.next_video() {
                    first_sent
                        .lock()
                        .map(|mut f| *f = f.or(Some(now_ms())))
                        .ok();
                    let _ = tx.send(RtpPacket {
                        video: true,
                        data: p,
                    });
                    idle = false;
                }
                while let Some(p) = src.next_audio() {
                    let _ = tx.send(RtpPacket {
                        video: false,
                        data: p,
                    });
                    idle = false;
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(())
        })
    };
    let job = e.start(
        StartRequest {
            room: "bench".into(),
            broadcast: None,
            profile: Some(a.profile.clone()),
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
            idle: Duration::from_secs(3),
            keyframe: None,
            size: None,
        },
    )?;
    let ladder = egress::ladder(&a.profile)?;
    let top = format!("v{}", ladder.rungs.len() - 1);
    let base = e.signed_prefix("bench", &job.broadcast);
    let playlist = format!("{base}{top}.m3u8");

    // LL-HLS viewer: blocking reload for the next part, as hls.js in low-latency mode does.
    let ll = {
        let (e, playlist) = (e.clone(), playlist.clone());
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut lat = Vec::new();
            let mut first_pdt = None;
            let mut next: Option<(u64, u64)> = None;
            loop {
                let q = next.map(|(m, p)| format!("_HLS_msn={m}&_HLS_part={p}"));
                let r = e.origin().handle(&playlist, q.as_deref(), None).await;
                let t = now_ms();
                if r.status != 200 {
                    if r.status == 404 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    break;
                }
                let text = String::from_utf8_lossy(&r.body).into_owned();
                for (msn, part, start) in listed(&text) {
                    if let Some(p) = part {
                        first_pdt = first_pdt.or(Some(start));
                        if seen.insert((msn, p)) && next.is_some() {
                            lat.push(t - start);
                        }
                        next = Some(next.map_or((msn, p + 1), |n| n.max((msn, p + 1))));
                    }
                }
                if text.contains("#EXT-X-ENDLIST") {
                    break;
                }
                // A part index past the segment's end: the server moves on to the next segment.
                if let Some((m, p)) = next {
                    if text.contains(&format!("-{m}.m4s\n")) {
                        next = Some((m + 1, 0));
                    } else {
                        next = Some((m, p));
                    }
                }
            }
            (lat, first_pdt)
        })
    };
    // Plain HLS viewer: polls every 100 ms; a segment is playable once listed complete.
    let plain = {
        let (e, playlist) = (e.clone(), playlist.clone());
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut lat = Vec::new();
            let mut primed = false;
            loop {
                let r = e.origin().handle(&playlist, None, None).await;
                let t = now_ms();
                if r.status == 200 {
                    let text = String::from_utf8_lossy(&r.body).into_owned();
                    for (msn, part, start) in listed(&text) {
                        if part.is_none() && seen.insert(msn) && primed {
                            lat.push(t - start);
                        }
                    }
                    primed = true;
                    if text.contains("#EXT-X-ENDLIST") {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            lat
        })
    };
    let (mut ll_lat, first_pdt) = ll.await?;
    let mut seg_lat = plain.await?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let status = e.wait(&job.id, Duration::from_secs(30)).await;
    let calib = match (
        first_pdt,
        *first_sent.lock().map_err(|_| anyhow::anyhow!("lock"))?,
    ) {
        (Some(p), Some(s)) => p - s,
        _ => f64::NAN,
    };
    let part_hold = a.part * 3.0 * 1000.0;
    let target = ladder.keyframe_interval_s() * 1000.0;
    println!(
        "hls-latency: {} s live, profile {}, part {:.2} s, segment {:.1} s, top rung {}",
        a.seconds,
        a.profile,
        a.part,
        target / 1000.0,
        top
    );
    println!("  first frame's PDT - its send time (calibration): {calib:.0} ms");
    let (l50, l95) = (pct(&mut ll_lat, 0.5), pct(&mut ll_lat, 0.95));
    let (s50, s95) = (pct(&mut seg_lat, 0.5), pct(&mut seg_lat, 0.95));
    println!(
        "  LL-HLS  part listed (blocking reload):  p50 {l50:6.0} ms  p95 {l95:6.0} ms  (n={})",
        ll_lat.len()
    );
    println!(
        "  HLS     segment listed (100 ms polls): p50 {s50:6.0} ms  p95 {s95:6.0} ms  (n={})",
        seg_lat.len()
    );
    println!(
        "  a player at the standard hold-back: LL-HLS ~{:.0} ms (PART-HOLD-BACK {:.0} ms), HLS ~{:.0} ms (3 target durations)",
        part_hold + l50 - a.part * 1000.0,
        part_hold,
        3.0 * target + s50 - target
    );
    if let Some(s) = status {
        println!(
            "  job: {:?}, {} segments, encoder speed {:.3}",
            s.state, s.segments, s.encoder_speed
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
