//! Presence in a large room, in virtual time: past `presence_batch_above` room clients, joins
//! and leaves reach the room's clients as batches at most every 500 ms, each client's view of
//! who is there stays exact, and a client never hears of its own join.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::World;
use sfu::{Signal, PRESENCE_INTERVAL};

/// Who `i` believes is in the room: its `joined` list is the World's join, so start from the
/// participants known at its join and apply every presence signal since.
fn apply(seen: &mut BTreeSet<u64>, s: &Signal) {
    match s {
        Signal::ParticipantJoined { participant } => {
            seen.insert(participant.id.0);
        }
        Signal::ParticipantLeft { participant, .. } => {
            seen.remove(&participant.0);
        }
        Signal::Presence { joined, left } => {
            for j in joined {
                seen.insert(j.id.0);
            }
            for l in left {
                seen.remove(&l.participant.0);
            }
        }
        _ => {}
    }
}

#[test]
fn a_large_rooms_joins_and_leaves_arrive_in_batches_and_add_up() {
    let mut w = World::new();
    let observer = w.room_listener("observer");
    // 80 students join, one every 20 ms (virtual), while time runs in 100 ms steps.
    let mut students = Vec::new();
    let mut batches_at = Vec::new();
    let mut signals_seen = 0;
    let mut seen = BTreeSet::new();
    let mut step = |w: &mut World, seen: &mut BTreeSet<u64>, batches_at: &mut Vec<Duration>| {
        w.run(Duration::from_millis(100));
        let all = w.signals_for(observer);
        for s in &all[signals_seen..] {
            apply(seen, s);
            if matches!(s, Signal::Presence { .. }) {
                batches_at.push(w.now - w.start);
            }
        }
        signals_seen = all.len();
    };
    for n in 0..80 {
        students.push(w.room_listener(&format!("student{n}")));
        if n % 5 == 4 {
            step(&mut w, &mut seen, &mut batches_at);
        }
    }
    for _ in 0..10 {
        step(&mut w, &mut seen, &mut batches_at);
    }
    let everyone: BTreeSet<u64> = students.iter().map(|&s| w.pid(s).0).collect();
    assert_eq!(seen, everyone, "the observer knows every student");
    let individual = w
        .signals_for(observer)
        .iter()
        .filter(|s| matches!(s, Signal::ParticipantJoined { .. }))
        .count();
    assert_eq!(
        individual, 49,
        "one message per join until the room has 50 room clients, then batches"
    );
    assert!(!batches_at.is_empty());

    // Half the class leaves at once: the observer hears it in a batch or two.
    let before = batches_at.len();
    for &s in students.iter().take(40) {
        let now = w.now;
        w.sfu.leave(now, w.pid(s)).expect("leave");
    }
    for _ in 0..10 {
        step(&mut w, &mut seen, &mut batches_at);
    }
    let remaining: BTreeSet<u64> = students.iter().skip(40).map(|&s| w.pid(s).0).collect();
    assert_eq!(seen, remaining, "the observer saw the 40 leave");
    assert!(
        batches_at.len() - before <= 2,
        "40 leaves at once in {} batches",
        batches_at.len() - before
    );
    // Never two batches within the interval (100 ms steps: at least 4 steps apart).
    for pair in batches_at.windows(2) {
        assert!(
            pair[1] - pair[0] + Duration::from_millis(100) >= PRESENCE_INTERVAL,
            "batches at {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    // A student never hears of its own join.
    let last = *students.last().expect("students");
    let me = w.pid(last).0;
    for s in w.signals_for(last) {
        if let Signal::Presence { joined, .. } = s {
            assert!(joined.iter().all(|j| j.id.0 != me));
        }
    }
}
