//! A large room and a long session in virtual time: the core's per-subscriber paths at 200
//! subscribers for 30 s, and its timers, keep-alives and timestamp rewriting over 10 minutes.
//!
//! Not 500 subscribers through 10 minutes (DESIGN's aim): every subscriber here is a whole
//! str0m peer (DTLS, SRTP, its own timers about every 20 ms, and the SFU's bandwidth probes to
//! it, ~150 datagrams a second at 5 fps), which costs ~0.2 CPU-s per subscriber-minute in a
//! debug build; 500 x 10 would take ~17 minutes.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::World;
use sfu::Quality;

fn viewers_through(n: usize, seconds: u64) {
    let mut w = World::new();
    // 5 fps and no audio: the cost is the peers', not the media.
    w.video_every_ms = 200;
    w.audio_every_ms = None;
    let p = w.whip_publisher("creator", false);
    let viewers: Vec<usize> = (0..n)
        .map(|i| w.whep_viewer(&format!("viewer{i}"), Quality::High))
        .collect();
    w.run(Duration::from_secs(seconds));

    let sent = w.client(p).video_frames_sent();
    assert!(sent + 25 >= seconds * 5, "publisher sent {sent} frames");
    assert_eq!(w.metrics.participants_timed_out.load(Ordering::Relaxed), 0);
    assert_eq!(
        w.metrics.participants.load(Ordering::Relaxed),
        n as u64 + 1,
        "everyone is still in the room"
    );
    for &v in &viewers {
        let c = w.client(v);
        assert!(c.connected, "{} connected", c.name);
        let frames = c.video_frames();
        // Every frame from its first keyframe on, in order, none twice and none missing:
        // the publisher's timestamps step by 3000 (90 kHz / 30) and the SFU keeps the steps.
        assert!(frames[0].keyframe, "{} starts on a keyframe", c.name);
        assert!(
            frames.len() as u64 + 30 >= sent,
            "{} received {} of {sent} frames",
            c.name,
            frames.len()
        );
        assert!(
            frames.windows(2).all(|f| f[1].time == f[0].time + 3000),
            "{}: a frame lost, repeated or out of order",
            c.name
        );
    }
}

#[test]
fn two_hundred_viewers_each_get_every_frame_in_order() {
    viewers_through(200, 30);
}

#[test]
fn ten_viewers_stay_through_ten_minutes_and_get_every_frame() {
    viewers_through(10, 600);
}
