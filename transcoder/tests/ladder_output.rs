//! Real RTP (GStreamer test sources and payloaders) through the transcoder for 20 s: every
//! rendition has its size, its bitrate, keyframes aligned with the others, parts within the
//! target, and AAC audio on the same timeline.

mod common;

use std::time::Duration;

use common::*;
use transcoder::{RenditionId, Transcoder, VideoCodec};

fn check_clean_run(codec: VideoCodec, vcodec: VideoCodec) {
    let src = RtpSource::start(codec, 640, 360).expect("source");
    let (tc, rx) = Transcoder::start(test_spec(vcodec)).expect("start");
    let (out, stats) = run(tc, rx, &src, 20, Faults::default());
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert!(out.finished);
    assert!(out.stalls.is_empty(), "stalled: {:?}", out.stalls);
    eprintln!("stats: {stats:?}");
    for (r, parts) in &out.parts {
        let f = parts.first().map(|p| (p.pts, p.duration));
        let l = parts.last().map(|p| (p.pts, p.duration));
        eprintln!("{r}: {} parts, first {f:?} last {l:?}", parts.len());
    }
    let ladder = test_ladder();
    let mut segment_starts = Vec::new();
    for (i, rung) in ladder.rungs.iter().enumerate() {
        let r = RenditionId::Video(i);
        let parts = &out.parts[&r];
        let init = &out.init[&r];
        assert_eq!(init.codecs, rung.codecs());
        let rb = read_back(&out.file(r), true);
        eprintln!(
            "{r}: {}x{} decoded {} frames, {} fragments, caps {}",
            rb.width,
            rb.height,
            rb.decoded,
            rb.fragment_starts.len(),
            rb.caps
        );
        assert_eq!(
            (rb.width, rb.height),
            (rung.width as i32, rung.height as i32),
            "{r} size"
        );
        let profile = match rung.profile {
            ladders::H264Profile::Baseline => "constrained-baseline".to_string(),
            p => p.to_string(),
        };
        assert!(
            rb.caps.contains(&format!("profile=(string){profile},")),
            "{r}: {}",
            rb.caps
        );
        // ~18 s of media after start-up at the rung's frame rate.
        let expect = 17 * rung.fps as usize;
        assert!(
            rb.decoded >= expect,
            "{r}: {} frames < {expect}",
            rb.decoded
        );
        // Parts: within the target, and a segment starts every 2 s with a keyframe.
        for p in parts {
            assert!(
                p.duration <= Duration::from_millis(501),
                "{r}: part of {:?}",
                p.duration
            );
        }
        let starts: Vec<f64> = rb
            .fragment_starts
            .iter()
            .filter(|f| f.1)
            .map(|f| f.0)
            .collect();
        let flagged: Vec<Duration> = parts
            .iter()
            .filter(|p| p.independent)
            .map(|p| p.pts)
            .collect();
        assert_eq!(
            starts.len(),
            flagged.len(),
            "{r}: independent parts begin with a sync sample"
        );
        assert!(starts.len() >= 9, "{r}: {} segments", starts.len());
        for w in starts.windows(2) {
            assert!(
                (w[1] - w[0] - 2.0).abs() < 0.05,
                "{r}: segment of {} s",
                w[1] - w[0]
            );
        }
        segment_starts.push(starts);
        // Average bitrate over whole segments after the first, within 15% of target.
        let steady: Vec<_> = parts
            .iter()
            .skip_while(|p| !p.independent)
            .skip(1)
            .skip_while(|p| !p.independent)
            .collect();
        let bytes: usize = steady.iter().map(|p| p.data.len()).sum();
        let secs: f64 = steady.iter().map(|p| p.duration.as_secs_f64()).sum();
        let kbps = bytes as f64 * 8.0 / secs / 1000.0;
        eprintln!("{r}: {kbps:.0} kbit/s (target {})", rung.bitrate_kbps);
        let err = (kbps - rung.bitrate_kbps as f64).abs() / rung.bitrate_kbps as f64;
        assert!(
            err <= 0.15,
            "{r}: {kbps:.0} kbit/s vs {} target",
            rung.bitrate_kbps
        );
    }
    // Keyframes at the same media time in every rendition.
    for s in &segment_starts[1..] {
        let n = s.len().min(segment_starts[0].len());
        for k in 0..n {
            assert!(
                (s[k] - segment_starts[0][k]).abs() < 1e-3,
                "keyframes not aligned: {s:?} vs {:?}",
                segment_starts[0]
            );
        }
    }
    // AAC on the same timeline, segmented on the same grid.
    let a = read_back(&out.file(RenditionId::Audio), false);
    assert!(
        a.caps.contains("audio/mpeg") && a.caps.contains("mpegversion=(int)4"),
        "{}",
        a.caps
    );
    assert!(a.decoded > 700, "audio frames {}", a.decoded); // 1024-sample frames: ~47 per second
    let v0 = segment_starts[0][0];
    let audio_first = a.fragment_starts.first().map(|f| f.0).unwrap_or(0.0);
    assert!(
        (audio_first - v0).abs() < 1.0,
        "audio starts at {audio_first}, video at {v0}"
    );
}

#[test]
fn vp8_source_makes_every_rendition() {
    check_clean_run(VideoCodec::Vp8, VideoCodec::Vp8);
}

#[test]
fn h264_source_makes_every_rendition() {
    check_clean_run(VideoCodec::H264, VideoCodec::H264);
}
