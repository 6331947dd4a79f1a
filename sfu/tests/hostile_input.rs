//! Hostile network input in virtual time: garbage datagrams and mutated SDP never panic the
//! core, never disturb other participants, and are refused with an error.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Rng, World};
use sfu::sdp_inspect::inspect_offer;
use sfu::{JoinRequest, PeerKind, Permissions, Quality};

fn garbage(rng: &mut Rng) -> Vec<u8> {
    let len = 1 + rng.below(1400);
    let mut b = rng.bytes(len);
    // Steer the first byte into each demultiplexing range (STUN 0-3, DTLS 20-63, RTP/RTCP
    // 128-191) so the parsers behind them see garbage, not just the classifier.
    b[0] = match rng.below(4) {
        0 => rng.below(4) as u8,
        1 => 20 + rng.below(44) as u8,
        2 => 128 + rng.below(64) as u8,
        _ => b[0],
    };
    if b.len() > 1 && b[0] >= 128 {
        // Some look like RTCP (PT 200-206), some like RTP.
        b[1] = if rng.below(2) == 0 {
            200 + rng.below(7) as u8
        } else {
            96
        };
    }
    b
}

#[test]
fn garbage_datagrams_from_strangers_and_from_a_peers_address_do_not_disturb_media() {
    let mut w = World::new();
    let p = w.whip_publisher("creator", true);
    let v = w.whep_viewer("viewer", Quality::High);
    w.run(Duration::from_secs(2));
    let before = w.client(v).video_frames().len();
    assert!(before > 20);
    let mut rng = Rng(0x5eed);
    let publisher = w.client(p).addr;
    for round in 0..300 {
        for _ in 0..20 {
            let from: SocketAddr = if rng.below(3) == 0 {
                publisher
            } else {
                format!("127.0.0.{}:{}", 2 + rng.below(200), 1024 + rng.below(60000))
                    .parse()
                    .expect("addr")
            };
            let g = garbage(&mut rng);
            w.inject(from, &g);
        }
        w.inject(publisher, &[]);
        if round % 10 == 0 {
            w.run(Duration::from_millis(100));
        }
    }
    w.run(Duration::from_secs(2));
    let after = w.client(v).video_frames().len();
    assert!(after > before + 100, "viewer frames {before} -> {after}");
    assert_eq!(w.sfu.participant_count(), 2);
    let bad = w
        .metrics
        .datagrams_bad
        .load(std::sync::atomic::Ordering::Relaxed)
        + w.metrics
            .datagrams_unrouted
            .load(std::sync::atomic::Ordering::Relaxed);
    assert!(bad > 1000, "garbage was counted ({bad})");
}

#[test]
fn mutated_offers_are_refused_or_accepted_but_never_panic() {
    let mut w = World::new();
    w.whip_publisher("creator", false);
    let v = w.whep_viewer("viewer", Quality::High);
    w.run(Duration::from_secs(1));
    let offer = w.sample_offer();
    let lines: Vec<&str> = offer.split("\r\n").collect();
    let mut rng = Rng(42);
    let mut refused = 0;
    for i in 0..300 {
        let mutated = match i % 4 {
            0 => {
                // Drop a random line.
                let k = rng.below(lines.len());
                lines
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != k)
                    .map(|(_, l)| *l)
                    .collect::<Vec<_>>()
                    .join("\r\n")
            }
            1 => {
                // Truncate.
                let cut = rng.below(offer.len());
                offer[..offer.floor_char_boundary(cut)].to_string()
            }
            2 => {
                // Corrupt bytes.
                let mut b = offer.clone().into_bytes();
                for _ in 0..5 {
                    let k = rng.below(b.len());
                    b[k] = b' ' + (rng.next() % 90) as u8;
                }
                String::from_utf8_lossy(&b).into_owned()
            }
            _ => {
                // Duplicate a random line many times.
                let k = rng.below(lines.len());
                let mut l = lines.clone();
                for _ in 0..50 {
                    l.insert(k, lines[k]);
                }
                l.join("\r\n")
            }
        };
        let _ = inspect_offer(&mutated);
        let r = w.sfu.join(
            w.now,
            JoinRequest {
                room: "r".into(),
                identity: format!("fuzz{i}"),
                kind: PeerKind::Whip,
                perms: Permissions {
                    publish: true,
                    subscribe: false,
                    publish_data: false,
                },
                offer: Some(mutated),
                quality: Quality::High,
            },
        );
        match r {
            Err(_) => refused += 1,
            Ok(j) => {
                w.sfu.leave(w.now, j.participant).expect("leave");
            }
        }
    }
    assert!(refused > 50, "most mutations are refused ({refused})");
    // The room still works.
    let before = w.client(v).video_frames().len();
    w.run(Duration::from_secs(2));
    assert!(w.client(v).video_frames().len() > before + 40);
    assert_eq!(w.sfu.participant_count(), 2);
}

#[test]
fn junk_answers_candidates_and_unknown_participants_are_errors() {
    let mut w = World::new();
    let a = w.room_publisher("ana", false);
    w.run(Duration::from_secs(1));
    let pid = w.pid(a);
    assert!(w.sfu.answer(w.now, pid, "v=0").is_err());
    assert!(w.sfu.answer(w.now, pid, "garbage").is_err());
    assert!(w.sfu.candidate(pid, "candidate:nonsense").is_err());
    assert!(w.sfu.offer(w.now, pid, "").is_err());
    assert!(w.sfu.offer(w.now, sfu::ParticipantId(999), "v=0").is_err());
    assert!(w.sfu.leave(w.now, sfu::ParticipantId(999)).is_err());
    w.run(Duration::from_secs(1));
    assert_eq!(w.sfu.participant_count(), 1);
}

#[test]
fn random_text_never_panics_the_offer_inspector() {
    let mut rng = Rng(7);
    for _ in 0..5000 {
        let n = rng.below(300);
        let s: String = (0..n)
            .map(|_| match rng.below(6) {
                0 => '\n',
                1 => '=',
                2 => ' ',
                3 => 'm',
                4 => 'a',
                _ => (b'!' + (rng.next() % 90) as u8) as char,
            })
            .collect();
        let _ = inspect_offer(&format!("v=0\n{s}"));
    }
}

/// Issue 13, item 5: a second room join or WHIP publish with the same identity replaces the
/// first (one token cannot fill a room); WHEP viewers may share an identity.
#[test]
fn a_second_join_with_the_same_identity_replaces_the_first() {
    let mut w = World::new();
    let first = w.room_publisher("ana", false);
    let pub1 = w.whip_publisher("cam", false);
    w.run(Duration::from_secs(1));
    let second = w.room_publisher("ana", false);
    let pub2 = w.whip_publisher("cam", false);
    let v1 = w.whep_viewer("viewer", Quality::High);
    let v2 = w.whep_viewer("viewer", Quality::High);
    w.run(Duration::from_secs(2));
    for old in [first, pub1] {
        assert!(
            w.signals_for(old).iter().any(|s| matches!(
                s,
                sfu::Signal::Closed { reason } if reason.contains("replaced")
            )),
            "the first connection is told why it ends"
        );
    }
    let people = w.sfu.room_participants("r");
    assert_eq!(people.len(), 4, "ana, cam and two viewers: {people:?}");
    for i in [second, pub2, v1, v2] {
        let pid = w.pid(i);
        assert!(people.iter().any(|p| p.id == pid), "{i} stays");
    }
    // The new publisher's media reaches a viewer.
    w.run(Duration::from_secs(3));
    assert!(!w.client(v1).video_frames().is_empty());
}
