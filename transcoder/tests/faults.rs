//! A bad network and a changing source: loss, reordering, a garbage burst, a mid-stream
//! resolution change and an SSRC change. The output keeps flowing at the ladder's sizes.

mod common;

use std::time::Duration;

use common::*;
use transcoder::{RenditionId, Transcoder, VideoCodec};

#[test]
fn output_keeps_flowing_through_loss_reordering_garbage_resize_and_ssrc_change() {
    let src = RtpSource::start(VideoCodec::Vp8, 640, 360).expect("source");
    let (tc, rx) = Transcoder::start(test_spec(VideoCodec::Vp8)).expect("start");
    let faults = Faults {
        loss: 0.05,
        reorder: 0.05,
        garbage_at: Some((Duration::from_secs(5), 3000)),
        resize_at: Some((Duration::from_secs(8), 320, 240)),
        ssrc_change_at: Some(Duration::from_secs(13)),
        shed: None,
    };
    let (out, stats) = run(tc, rx, &src, 20, faults);
    eprintln!(
        "stats: {stats:?}, keyframe requests {}",
        out.keyframe_requests
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert!(out.finished);
    assert!(
        stats.packets_rejected >= 2000,
        "garbage was let in: {stats:?}"
    );
    assert!(
        out.keyframe_requests >= 1,
        "loss of keyframe packets is reported"
    );
    let ladder = test_ladder();
    for (i, rung) in ladder.rungs.iter().enumerate() {
        let r = RenditionId::Video(i);
        let parts = &out.parts[&r];
        // Media keeps coming: no hole longer than 2.5 s on the output timeline, and it reaches the end.
        let first = parts[0].pts.as_secs_f64();
        let mut end = first;
        for p in parts {
            let gap = p.pts.as_secs_f64() - end;
            assert!(
                gap < 2.5,
                "{r}: a {gap:.2} s hole at {:.2}",
                p.pts.as_secs_f64()
            );
            end = p.pts.as_secs_f64() + p.duration.as_secs_f64();
        }
        // Start-up waits for the first intact keyframe (requested, answered by the sender).
        assert!(
            end - first > 15.0,
            "{r}: only {:.1} s of output",
            end - first
        );
        // The ladder's size holds through the source's change of size.
        let rb = read_back(&out.file(r), true);
        assert_eq!(
            (rb.width, rb.height),
            (rung.width as i32, rung.height as i32)
        );
        eprintln!(
            "{r}: {} frames, {} fragments",
            rb.decoded,
            rb.fragment_starts.len()
        );
        // Frames the decoder could not conceal are dropped, not frozen: at least half remain.
        assert!(
            rb.decoded >= 10 * rung.fps as usize,
            "{r}: {} frames",
            rb.decoded
        );
    }
    let audio = &out.parts[&RenditionId::Audio];
    let secs: f64 = audio.iter().map(|p| p.duration.as_secs_f64()).sum();
    assert!(secs > 17.0, "audio {secs:.1} s");
}

/// Shedding a rung (the encoder fell behind) and adding it back: the rung's output stops at a
/// segment boundary with its last segment complete, nothing counts as a stall meanwhile, the
/// others go on without a hole, and the rung comes back with a keyframe at a boundary the
/// other rungs share.
#[test]
fn a_shed_rung_stops_at_a_segment_boundary_and_comes_back_on_the_grid() {
    let src = RtpSource::start(VideoCodec::Vp8, 640, 360).expect("source");
    let (tc, rx) = Transcoder::start(test_spec(VideoCodec::Vp8)).expect("start");
    let top = test_ladder().rungs.len() - 1;
    let faults = Faults {
        shed: Some((Duration::from_secs(5), Duration::from_secs(16), top)),
        ..Faults::default()
    };
    let (out, _) = run(tc, rx, &src, 24, faults);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert!(
        out.stalls.is_empty(),
        "a shed rung is silent on purpose: {:?}",
        out.stalls
    );
    let shed = &out.parts[&RenditionId::Video(top)];
    let low = &out.parts[&RenditionId::Video(0)];
    let starts = |parts: &[transcoder::Part]| -> Vec<f64> {
        parts
            .iter()
            .filter(|p| p.independent)
            .map(|p| p.pts.as_secs_f64())
            .collect()
    };
    let (shed_starts, low_starts) = (starts(shed), starts(low));
    // The pause: one part at a segment boundary that lasts until the rung's return (the
    // boundary frame the muxer held), then a keyframe on the grid again.
    let timeline: Vec<String> = shed
        .iter()
        .map(|p| {
            format!(
                "{:.2}{}+{:.2}",
                p.pts.as_secs_f64(),
                if p.independent { "K" } else { "" },
                p.duration.as_secs_f64()
            )
        })
        .collect();
    let held = shed
        .iter()
        .position(|p| p.duration > Duration::from_secs(4))
        .unwrap_or_else(|| panic!("the shed rung did not pause: {timeline:?}"));
    let (stopped, resumed) = (
        shed[held].pts.as_secs_f64(),
        (shed[held].pts + shed[held].duration).as_secs_f64(),
    );
    eprintln!("shed rung: stopped at {stopped:.2} s, back at {resumed:.2} s; v0 segments start at {low_starts:?}");
    assert!(shed[held].independent, "it stops at a boundary");
    let after = shed.get(held + 1).expect("it came back");
    assert!(after.independent, "it comes back with a keyframe");
    assert!((after.pts.as_secs_f64() - resumed).abs() < 0.01);
    let on_grid = |t: f64| low_starts.iter().any(|s| (s - t).abs() < 0.01);
    assert!(
        on_grid(stopped),
        "stopped at a segment boundary of v0: {stopped}"
    );
    assert!(
        on_grid(resumed),
        "back at a segment boundary of v0: {resumed}"
    );
    assert!(
        resumed - stopped >= 8.0,
        "shed for most of 5..16 s: {stopped}..{resumed}"
    );
    // Every segment start it has is one the lowest rung has too.
    for s in &shed_starts {
        assert!(on_grid(*s), "segment start {s} not on v0's grid");
    }
    // The others have no hole.
    for w in low.windows(2) {
        let gap = w[1].pts.as_secs_f64() - (w[0].pts + w[0].duration).as_secs_f64();
        assert!(gap < 0.2, "v0 has a {gap:.2} s hole");
    }
    // And the rung decodes after its return.
    let rb = read_back(&out.file(RenditionId::Video(top)), true);
    assert!(rb.decoded > 100, "{rb:?}");
}
