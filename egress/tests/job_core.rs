//! The job's rules in virtual time: masters, going live, shedding the most expensive rung when
//! the encoder falls behind, adding it back once the machine has room, backing off a rung that
//! flaps, never shedding the lowest rung, failing on undecodable input; and admission.

use std::time::Duration;

use egress::encode_cost::{Capacity, CostModel, JOB_OVERHEAD_CORES};
use egress::job_core::{Action, JobCore, ShedPolicy, Tick};
use egress::speed::RenditionSpeed;
use transcoder::RenditionId;

const COSTS: [f64; 4] = [0.1, 0.15, 0.25, 0.4];

fn core() -> JobCore {
    JobCore::new(ShedPolicy::default(), COSTS.to_vec(), true)
}

/// One tick at second `s` where every encoded video rendition runs at `speed`, `lag_ms` behind.
fn tick(c: &JobCore, s: u64, speed: f64, lag_ms: u64, idle: f64) -> Tick {
    let renditions = (0..COSTS.len())
        .filter(|i| !c.shed().contains(i))
        .map(|i| {
            (
                RenditionId::Video(i),
                RenditionSpeed {
                    rendition: format!("v{i}"),
                    speed,
                    lag_ms,
                },
            )
        })
        .chain(std::iter::once((
            RenditionId::Audio,
            RenditionSpeed {
                rendition: "audio".into(),
                speed: 1.0,
                lag_ms: 300,
            },
        )))
        .collect();
    Tick {
        now: Duration::from_secs(s),
        input_active: true,
        renditions,
        idle_cores: Some(idle),
        input_dropped: 0.0,
    }
}

/// Runs seconds `from..to` with the same figures; returns every action with its second.
fn run(c: &mut JobCore, from: u64, to: u64, speed: f64, lag: u64, idle: f64) -> Vec<(u64, Action)> {
    let mut out = Vec::new();
    for s in from..to {
        let t = tick(c, s, speed, lag, idle);
        out.extend(c.tick(&t).into_iter().map(|a| (s, a)));
    }
    out
}

fn sheds(actions: &[(u64, Action)]) -> Vec<(u64, usize)> {
    actions
        .iter()
        .filter_map(|(s, a)| match a {
            Action::Shed { rung, .. } => Some((*s, *rung)),
            _ => None,
        })
        .collect()
}

fn readds(actions: &[(u64, Action)]) -> Vec<(u64, usize)> {
    actions
        .iter()
        .filter_map(|(s, a)| match a {
            Action::Readd { rung } => Some((*s, *rung)),
            _ => None,
        })
        .collect()
}

#[test]
fn masters_go_out_once_every_track_has_a_segment_then_every_five_audio_segments() {
    let mut c = core();
    for i in 0..3 {
        assert!(c.segment_closed(RenditionId::Video(i)).is_empty());
    }
    assert!(c.segment_closed(RenditionId::Audio).is_empty());
    assert_eq!(
        c.segment_closed(RenditionId::Video(3)),
        vec![Action::WriteMasters, Action::GoLive]
    );
    let mut refreshed = 0;
    for _ in 0..10 {
        for i in 0..4 {
            assert!(c.segment_closed(RenditionId::Video(i)).is_empty());
        }
        refreshed += c
            .segment_closed(RenditionId::Audio)
            .iter()
            .filter(|a| **a == Action::WriteMasters)
            .count();
    }
    assert_eq!(refreshed, 2, "audio segments 2..=11: refreshed at 5 and 10");
}

#[test]
fn a_shed_rung_does_not_hold_back_the_first_masters() {
    let mut c = core();
    // Slow from the start: the top rung is shed before it ever closed a segment.
    let a = run(&mut c, 0, 12, 0.6, 4000, 0.0);
    assert_eq!(sheds(&a).first().map(|s| s.1), Some(3));
    for i in 0..3 {
        c.segment_closed(RenditionId::Video(i));
    }
    assert_eq!(
        c.segment_closed(RenditionId::Audio),
        vec![Action::WriteMasters, Action::GoLive]
    );
}

#[test]
fn a_slow_encoder_sheds_the_most_expensive_rung_within_seconds_then_the_next() {
    let mut c = core();
    assert!(
        run(&mut c, 0, 10, 1.0, 600, 0.5).is_empty(),
        "keeping pace: nothing happens"
    );
    let a = run(&mut c, 10, 40, 0.7, 3000, 0.0);
    let s = sheds(&a);
    assert_eq!(
        s[0],
        (13, 3),
        "slow for 3 s (from 10): the 0.40-core rung goes: {a:?}"
    );
    assert_eq!(s[1].1, 2, "still slow after settling: the next");
    assert_eq!(s[1].0, 13 + 6 + 3, "the figures settle 6 s first: {s:?}");
    assert_eq!(s.len(), 3, "then v1; v0 stays: {s:?}");
    assert!(!c.shed().contains(&0));
    // Each shed rewrites the masters right away.
    let masters = a.iter().filter(|(_, x)| *x == Action::WriteMasters).count();
    assert_eq!(masters, 3);
    let changes = c.changes();
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0].rendition, "v3");
    assert_eq!(changes[0].change, "shed");
    assert!(
        changes[0].reason.contains("speed 0.70"),
        "{}",
        changes[0].reason
    );
}

#[test]
fn lag_alone_counts_as_slow_and_a_short_dip_does_not() {
    let mut c = core();
    run(&mut c, 0, 10, 1.0, 500, 0.0);
    // A 2 s dip: shorter than slow_for.
    assert!(sheds(&run(&mut c, 10, 12, 0.5, 500, 0.0)).is_empty());
    assert!(sheds(&run(&mut c, 12, 20, 1.0, 500, 0.0)).is_empty());
    // Keeping speed 1.0 while 3.5 s behind: behind all the same.
    let s = sheds(&run(&mut c, 20, 30, 1.0, 3500, 0.0));
    assert_eq!(s.first(), Some(&(23, 3)));
}

#[test]
fn a_job_that_keeps_pace_by_dropping_input_is_slow_too() {
    let mut c = core();
    run(&mut c, 0, 10, 1.0, 500, 0.0);
    // 1% dropped (a few late packets): fine.
    for s in 10..20 {
        let mut t = tick(&c, s, 1.0, 500, 0.0);
        t.input_dropped = 0.01;
        assert!(c.tick(&t).is_empty());
    }
    // Speed and lag look fine, but a tenth of the input is dropped to get there.
    let mut shed = None;
    for s in 20..30 {
        let mut t = tick(&c, s, 0.97, 1500, 0.0);
        t.input_dropped = 0.1;
        if let Some(Action::Shed { rung, reason }) = c.tick(&t).into_iter().next() {
            shed = Some((s, rung, reason));
            break;
        }
    }
    let (s, rung, reason) = shed.expect("shed");
    assert_eq!((s, rung), (23, 3));
    assert!(
        reason.contains("dropping 10% of the video input"),
        "{reason}"
    );
}

#[test]
fn no_input_is_not_a_slow_encoder() {
    let mut c = core();
    for s in 0..60 {
        let mut t = tick(&c, s, 0.0, 9000, 0.0);
        t.input_active = false;
        assert!(c.tick(&t).is_empty());
    }
}

#[test]
fn a_shed_rung_comes_back_only_after_keeping_pace_with_room_for_it() {
    let mut c = core();
    run(&mut c, 0, 10, 1.0, 500, 0.0);
    assert_eq!(sheds(&run(&mut c, 10, 14, 0.6, 4000, 0.0)), vec![(13, 3)]);
    // Keeping pace but no idle CPU for a 0.4-core rung (needs 0.6 with headroom): stays out.
    assert!(readds(&run(&mut c, 14, 200, 1.0, 500, 0.5)).is_empty());
    // Room: back after 30 s of it.
    let r = readds(&run(&mut c, 200, 260, 1.0, 500, 1.2));
    assert_eq!(r, vec![(230, 3)], "30 s from 200");
    assert!(c.shed().is_empty());
    assert_eq!(
        c.changes().last().map(|x| x.change.as_str()),
        Some("readded")
    );
}

#[test]
fn a_rung_that_flaps_waits_twice_as_long_each_time() {
    let mut c = core();
    run(&mut c, 0, 10, 1.0, 500, 0.0);
    let mut t = 10;
    let mut waits = Vec::new();
    for _ in 0..3 {
        let s = sheds(&run(&mut c, t, t + 4, 0.6, 4000, 0.0));
        assert_eq!(s.len(), 1, "{s:?}");
        let shed_at = s[0].0;
        let r = readds(&run(&mut c, t + 4, t + 1000, 1.0, 500, 2.0));
        let back = r.first().expect("re-added").0;
        waits.push(back - (shed_at + 6));
        // Slow again soon after: shed again (a flap).
        t = back + 10;
        run(&mut c, back + 1, t, 1.0, 500, 2.0);
    }
    assert_eq!(waits[0], 30, "{waits:?}");
    assert!(
        waits[1] >= 2 * waits[0] && waits[2] >= 2 * waits[1],
        "{waits:?}"
    );
}

#[test]
fn undecodable_input_fails_the_job_but_a_shed_rungs_silence_does_not() {
    let mut c = core();
    run(&mut c, 0, 10, 1.0, 500, 0.0);
    run(&mut c, 10, 14, 0.6, 4000, 0.0);
    assert!(c.shed().contains(&3));
    c.stalled(RenditionId::Video(3), Duration::from_secs(14));
    assert!(run(&mut c, 14, 40, 1.0, 500, 0.0)
        .iter()
        .all(|(_, a)| !matches!(a, Action::Fail(_))));
    c.stalled(RenditionId::Video(1), Duration::from_secs(40));
    let a = run(&mut c, 40, 50, 1.0, 500, 0.0);
    let fail = a.iter().find(|(_, a)| matches!(a, Action::Fail(_)));
    assert_eq!(
        fail.map(|f| f.0),
        Some(49),
        "8 s after the stall notice: {a:?}"
    );
    // Resumed in time: no failure.
    let mut c = core();
    c.stalled(RenditionId::Video(1), Duration::from_secs(5));
    run(&mut c, 5, 10, 1.0, 500, 0.0);
    c.resumed(RenditionId::Video(1));
    assert!(run(&mut c, 10, 30, 1.0, 500, 0.0).is_empty());
}

fn model() -> CostModel {
    CostModel {
        cores_per_mpixel_s: 0.01,
        cores_per_rung: 0.05,
        ..CostModel::built_in()
    }
}

#[test]
fn admission_keeps_the_rungs_that_fit_beside_running_jobs() {
    let ladder = ladders::shipped("latam-mobile").expect("shipped");
    let m = model();
    let all: f64 = m.ladder_cores(&ladder).iter().sum::<f64>() + JOB_OVERHEAD_CORES;
    let cap = std::sync::Arc::new(Capacity::new(all * 1.5, m.clone()));
    let first = cap.admit(&ladder);
    assert_eq!(first.ladder.rungs.len(), ladder.rungs.len());
    assert!(first.skipped.is_empty());
    assert!((cap.free() - all * 0.5).abs() < 1e-9);
    // The second job gets what is left: the lowest rungs, contiguous.
    let second = cap.admit(&ladder);
    let kept = second.ladder.rungs.len();
    assert!(kept >= 1 && kept < ladder.rungs.len(), "{kept}");
    assert_eq!(second.skipped.len(), ladder.rungs.len() - kept);
    assert!(
        second.skipped[0].contains("over the node's encode capacity"),
        "{:?}",
        second.skipped
    );
    assert_eq!(second.ladder.rungs[0].name, ladder.rungs[0].name);
    // A third still starts, with its lowest rung: a broadcast never fails for capacity.
    let third = cap.admit(&ladder);
    assert_eq!(third.ladder.rungs.len(), 1);
    // Ending jobs give their cores back.
    drop((first, second, third));
    assert!((cap.free() - all * 1.5).abs() < 1e-9);
}

#[test]
fn the_cost_model_fits_two_measurements() {
    let m = CostModel::fit("veryfast", (6.912, 0.15), (27.648, 0.40));
    assert!((m.rung_cores(&rung(640, 360, 30)) - 0.15).abs() < 5e-3);
    assert!((m.rung_cores(&rung(1280, 720, 30)) - 0.40).abs() < 5e-3);
    assert!(m.rung_cores(&rung(1920, 1080, 30)) > 0.7);
    // A noisy pair never gives a negative slope or cost.
    let m = CostModel::fit("veryfast", (6.912, 0.3), (27.648, 0.2));
    assert!(m.cores_per_mpixel_s >= 0.0 && m.cores_per_rung >= 0.0);
}

fn rung(w: u32, h: u32, fps: u32) -> ladders::Rung {
    let mut r = ladders::shipped("global").expect("shipped").rungs[0].clone();
    r.width = w;
    r.height = h;
    r.fps = fps;
    r
}
