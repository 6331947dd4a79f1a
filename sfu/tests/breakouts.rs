//! Breakouts in virtual time: a moderator moves two of four participants into a breakout and
//! back; each receives media only from its own group, on the connection it has (no new peer),
//! and everyone is told who is where.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::World;
use sfu::{ParticipantId, SfuError, Signal};

/// Frames `i` has received so far, by the participant that published them.
fn received_from(w: &World, i: usize) -> HashMap<ParticipantId, usize> {
    let mut by_mid = HashMap::new();
    for s in w.signals_for(i) {
        if let Signal::Subscribed {
            participant, mid, ..
        } = s
        {
            by_mid.insert(mid.clone(), *participant);
        }
    }
    let mut out = HashMap::new();
    for f in w.client(i).remote_frames() {
        if let Some(p) = by_mid.get(&f.mid.to_string()) {
            *out.entry(*p).or_insert(0) += 1;
        }
    }
    out
}

/// Who `i` received more than `min` new frames from between `before` and now.
fn flowing(
    w: &World,
    i: usize,
    before: &HashMap<ParticipantId, usize>,
    min: usize,
) -> Vec<ParticipantId> {
    let now = received_from(w, i);
    let mut v: Vec<ParticipantId> = now
        .iter()
        .filter(|(p, n)| **n > before.get(p).copied().unwrap_or(0) + min)
        .map(|(p, _)| *p)
        .collect();
    v.sort_by_key(|p| p.0);
    v
}

#[test]
fn a_breakout_receives_only_its_own_group_and_comes_back() {
    let mut w = World::new();
    let names = ["teacher", "ana", "ben", "caro"];
    let c: Vec<usize> = names.iter().map(|n| w.room_publisher(n, false)).collect();
    w.run(Duration::from_secs(4));
    let pid: Vec<ParticipantId> = c.iter().map(|&i| w.pid(i)).collect();
    let sorted = |mut v: Vec<ParticipantId>| {
        v.sort_by_key(|p| p.0);
        v
    };
    for (k, &i) in c.iter().enumerate() {
        let others: Vec<ParticipantId> = pid.iter().copied().filter(|p| *p != pid[k]).collect();
        assert_eq!(
            flowing(&w, i, &HashMap::new(), 50),
            sorted(others),
            "{} receives everyone",
            names[k]
        );
    }

    // A student cannot move anyone; a bad name is refused.
    let now = w.now;
    assert!(matches!(
        w.sfu
            .set_group(now, pid[1], false, pid[2], Some("b1".into())),
        Err(SfuError::Forbidden(_))
    ));
    assert!(matches!(
        w.sfu
            .set_group(now, pid[0], true, pid[2], Some("../etc".into())),
        Err(SfuError::BadGroup(_))
    ));
    // The teacher moves ben and caro into breakout b1.
    for k in [2, 3] {
        w.sfu
            .set_group(now, pid[0], true, pid[k], Some("b1".into()))
            .expect("moved");
    }
    w.run(Duration::from_millis(1500)); // the renegotiation
    let before: Vec<_> = c.iter().map(|&i| received_from(&w, i)).collect();
    w.run(Duration::from_secs(2));
    let want = [vec![pid[1]], vec![pid[0]], vec![pid[3]], vec![pid[2]]];
    for (k, &i) in c.iter().enumerate() {
        assert_eq!(
            flowing(&w, i, &before[k], 5),
            want[k],
            "{} in its group only",
            names[k]
        );
    }
    // Everyone was told, with who moved them.
    let told = w
        .signals_for(c[1])
        .iter()
        .filter(|s| matches!(s, Signal::Grouped { group: Some(g), by, .. } if g == "b1" && by == "teacher"))
        .count();
    assert_eq!(told, 2);
    let infos = w.sfu.room_participants("r");
    assert_eq!(
        infos
            .iter()
            .filter(|p| p.group.as_deref() == Some("b1"))
            .count(),
        2,
        "the participant list says who is in the breakout"
    );

    // The teacher visits the breakout, then brings everyone back.
    let now = w.now;
    w.sfu
        .set_group(now, pid[0], true, pid[0], Some("b1".into()))
        .expect("visit");
    w.run(Duration::from_millis(1500));
    let before: Vec<_> = c.iter().map(|&i| received_from(&w, i)).collect();
    w.run(Duration::from_secs(2));
    assert_eq!(
        flowing(&w, c[0], &before[0], 5),
        sorted(vec![pid[2], pid[3]]),
        "the teacher in b1"
    );
    assert_eq!(
        flowing(&w, c[1], &before[1], 5),
        Vec::<ParticipantId>::new(),
        "ana alone in the main room"
    );
    let now = w.now;
    for k in [0, 2, 3] {
        w.sfu
            .set_group(now, pid[0], true, pid[k], None)
            .expect("back");
    }
    w.run(Duration::from_millis(1500));
    let before: Vec<_> = c.iter().map(|&i| received_from(&w, i)).collect();
    w.run(Duration::from_secs(2));
    for (k, &i) in c.iter().enumerate() {
        let others: Vec<ParticipantId> = pid.iter().copied().filter(|p| *p != pid[k]).collect();
        assert_eq!(
            flowing(&w, i, &before[k], 5),
            sorted(others),
            "{} receives everyone again",
            names[k]
        );
    }
}
