//! A bad network and a changing source: loss, reordering, a garbage burst, a mid-stream
//! resolution change and an SSRC change. The output keeps flowing at the ladder's sizes.

mod common;

use std::time::Duration;

use common::*;
use transcoder::{AudioInput, RenditionId, TranscodeSpec, Transcoder, VideoCodec, VideoInput};

#[test]
fn output_keeps_flowing_through_loss_reordering_garbage_resize_and_ssrc_change() {
    let src = RtpSource::start(Codec::Vp8, 640, 360).expect("source");
    let spec = TranscodeSpec::new(
        test_ladder(),
        Some(VideoInput {
            codec: VideoCodec::Vp8,
            payload_type: VIDEO_PT,
        }),
        Some(AudioInput {
            payload_type: AUDIO_PT,
        }),
    );
    let (tc, rx) = Transcoder::start(spec).expect("start");
    let faults = Faults {
        loss: 0.05,
        reorder: 0.05,
        garbage_at: Some((Duration::from_secs(5), 3000)),
        resize_at: Some((Duration::from_secs(8), 320, 240)),
        ssrc_change_at: Some(Duration::from_secs(13)),
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
