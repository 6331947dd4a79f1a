//! Encoder speed and lag per rendition, in virtual time: a job whose video falls behind reads
//! slow (its slowest video rendition), even while audio keeps up and the furthest track's
//! ratio would still say real time (issue 18).

use std::time::Duration;

use egress::speed::SpeedMeter;
use transcoder::RenditionId;

const S: Duration = Duration::from_secs(1);

/// Runs `seconds` of wall time; each rendition produces `rate` seconds of media per second.
fn run(meter: &mut SpeedMeter, from: u32, seconds: u32, rates: &[(RenditionId, f64)]) {
    for t in from..=from + seconds {
        let wall = S * t;
        let ends: Vec<_> = rates
            .iter()
            .map(|(r, rate)| (*r, Duration::from_secs_f64(f64::from(t) * rate)))
            .collect();
        meter.sample(wall, &ends);
    }
}

#[test]
fn a_job_whose_video_falls_behind_reads_slow_while_audio_keeps_up() {
    let mut m = SpeedMeter::default();
    let (v0, v1, a) = (
        RenditionId::Video(0),
        RenditionId::Video(1),
        RenditionId::Audio,
    );
    run(&mut m, 0, 1, &[(v0, 1.0), (v1, 1.0), (a, 1.0)]);
    assert_eq!(m.job(), None, "no figure in the first 2 s");
    run(&mut m, 2, 30, &[(v0, 1.0), (v1, 0.6), (a, 1.0)]);
    let (speed, lag) = m.job().expect("a figure");
    assert!(
        (speed - 0.6).abs() < 0.01,
        "the slowest video rendition: {speed}"
    );
    assert!(lag >= 12_000, "32 s at 0.6x is ~12.8 s behind: {lag} ms");
    let per: Vec<_> = m.renditions().into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        per.iter().map(|r| r.rendition.as_str()).collect::<Vec<_>>(),
        ["v0", "v1", "audio"]
    );
    assert_eq!(per[0].speed, 1.0);
    assert_eq!(per[0].lag_ms, 0);
    assert_eq!(per[2].speed, 1.0, "audio keeps up");
}

#[test]
fn speed_is_over_the_last_window_lag_stays_after_a_stall() {
    let mut m = SpeedMeter::default();
    let v = RenditionId::Video(0);
    // 20 s in real time, then 5 s producing nothing (a stall), then real time again.
    run(&mut m, 0, 20, &[(v, 1.0)]);
    for t in 21..=25 {
        m.sample(S * t, &[(v, S * 20)]);
    }
    let (speed, lag) = m.job().expect("figure");
    assert!(speed <= 0.55, "the stall shows within the window: {speed}");
    assert_eq!(lag, 5_000);
    // Keeping pace again: speed recovers to 1 once the stall leaves the window; the lag stays
    // (the output is still 5 s behind live).
    for t in 26..=40 {
        m.sample(S * t, &[(v, S * (t - 5))]);
    }
    let (speed, lag) = m.job().expect("figure");
    assert_eq!(speed, 1.0);
    assert_eq!(lag, 5_000);
}

#[test]
fn an_audio_only_job_reads_its_audio() {
    let mut m = SpeedMeter::default();
    run(&mut m, 0, 12, &[(RenditionId::Audio, 0.9)]);
    let (speed, _) = m.job().expect("figure");
    assert!((speed - 0.9).abs() < 0.01, "{speed}");
}
