//! Forwarding behaviour in virtual time: str0m clients against the sans-IO core.

mod common;

use std::time::Duration;

use common::World;
use sfu::{Quality, Signal};

#[test]
fn whep_viewer_receives_a_whip_publishers_video_and_audio() {
    let mut w = World::new();
    let p = w.whip_publisher("creator", false);
    let v = w.whep_viewer("viewer", Quality::High);
    w.run(Duration::from_secs(5));
    assert!(w.client(p).connected && w.client(v).connected);
    let frames = w.client(v).video_frames();
    // ~30 fps for the ~4.5 s after connecting; the first frame forwarded is a keyframe.
    assert!(frames.len() > 100, "video frames {}", frames.len());
    assert!(frames[0].keyframe, "first forwarded frame is a keyframe");
    assert!(
        w.client(v).audio_frames() > 150,
        "audio frames {}",
        w.client(v).audio_frames()
    );
    // Timestamps only move forward.
    assert!(frames.windows(2).all(|f| f[1].time > f[0].time));
}

#[test]
fn each_viewer_gets_the_layer_it_asks_for_and_switches_on_request() {
    let mut w = World::new();
    w.whip_publisher("creator", true);
    let low = w.whep_viewer("low", Quality::Low);
    let high = w.whep_viewer("high", Quality::High);
    w.run(Duration::from_secs(4));
    let last_layer = |w: &World, i: usize| w.client(i).video_frames().last().map(|f| f.layer);
    assert_eq!(last_layer(&w, low), Some(0));
    assert_eq!(last_layer(&w, high), Some(2));
    // Only the wanted layer reaches each viewer after the first keyframe.
    let low_layers: Vec<u8> = w
        .client(low)
        .video_frames()
        .iter()
        .map(|f| f.layer)
        .collect();
    assert!(low_layers.iter().all(|l| *l == 0), "{low_layers:?}");

    // The low viewer asks for high: it switches at a keyframe, and its timeline stays monotonic.
    let pid = w.pid(low);
    let before = w.client(low).video_frames().len();
    w.sfu
        .set_preference(w.now, pid, None, Quality::High)
        .expect("preference");
    w.run(Duration::from_secs(4));
    let frames = w.client(low).video_frames();
    let after: Vec<_> = frames[before..].iter().collect();
    let first_high = after
        .iter()
        .position(|f| f.layer == 2)
        .expect("switched to high");
    assert!(after[first_high].keyframe, "switch happens on a keyframe");
    assert!(after[first_high..].iter().all(|f| f.layer == 2));
    assert!(
        frames.windows(2).all(|f| f[1].time > f[0].time),
        "RTP time monotonic across the switch"
    );
}

#[test]
fn room_publisher_is_told_which_layers_are_watched_dynacast() {
    let mut w = World::new();
    let p = w.room_publisher("tutor", true);
    w.run(Duration::from_secs(2));
    let needed = |w: &World| {
        w.signals_for(p).iter().rev().find_map(|s| match s {
            Signal::LayersNeeded { rids, .. } => Some(rids.clone()),
            _ => None,
        })
    };
    // Nobody watches: every layer may pause.
    assert_eq!(needed(&w), Some(vec![]));
    let v = w.whep_viewer("student", Quality::Low);
    w.run(Duration::from_secs(3));
    assert_eq!(needed(&w), Some(vec!["q".to_string()]));
    assert!(w.client(v).video_frames().len() > 30);
    let hv = w.whep_viewer("student2", Quality::High);
    w.run(Duration::from_secs(3));
    let n = needed(&w).expect("needed");
    // The high viewer gets the best layer its bandwidth estimate allows, above q; the
    // publisher is asked for exactly the layers being watched.
    let got = w
        .client(hv)
        .video_frames()
        .last()
        .map(|f| f.layer)
        .expect("frames");
    assert!(got >= 1, "high viewer on layer {got}");
    let want = vec!["q".to_string(), common::LAYERS[got as usize].to_string()];
    assert_eq!(n, want);
}

#[test]
fn room_clients_subscribe_to_each_other_through_server_offers() {
    let mut w = World::new();
    let a = w.room_publisher("ana", false);
    let b = w.room_publisher("ben", false);
    w.run(Duration::from_secs(4));
    for (me, other) in [(a, b), (b, a)] {
        let subscribed = w
            .signals_for(me)
            .iter()
            .filter(|s| matches!(s, Signal::Subscribed { .. }))
            .count();
        assert_eq!(
            subscribed,
            2,
            "{} subscribed to video+audio of the other",
            w.client(me).name
        );
        let got = w.client(me).remote_frames().count();
        assert!(
            got > 100,
            "{} received {got} frames from {}",
            w.client(me).name,
            w.client(other).name
        );
    }
}

#[test]
fn keyframe_requests_from_many_viewers_are_coalesced() {
    let mut w = World::new();
    let p = w.whip_publisher("creator", false);
    for i in 0..20 {
        w.whep_viewer(&format!("v{i}"), Quality::High);
    }
    w.run(Duration::from_secs(3));
    let requests = w.client(p).keyframe_requests.len();
    // 20 viewers joining within the same moment: at most one request per 500 ms window.
    assert!(
        requests <= 3 * 2 + 1,
        "publisher got {requests} keyframe requests"
    );
    for c in &w.clients[1..] {
        assert!(
            c.video_frames().len() > 40,
            "{} got {}",
            c.name,
            c.video_frames().len()
        );
    }
}

#[test]
fn a_silent_participant_is_removed_and_the_room_is_told() {
    let mut w = World::new();
    let a = w.room_publisher("ana", false);
    let b = w.room_publisher("ben", false);
    w.run(Duration::from_secs(3));
    w.clients[b].online = false;
    w.run(Duration::from_secs(17));
    assert_eq!(w.sfu.participant_count(), 1);
    let bid = w.pid(b);
    assert!(w
        .signals_for(a)
        .iter()
        .any(|s| matches!(s, Signal::ParticipantLeft { participant, .. } if *participant == bid)));
    assert!(w
        .signals_for(b)
        .iter()
        .any(|s| matches!(s, Signal::Closed { .. })));
    assert_eq!(
        w.metrics
            .participants_timed_out
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn nack_repairs_five_percent_downstream_loss() {
    let mut w = World::new();
    w.whip_publisher("creator", false);
    let clean = w.whep_viewer("clean", Quality::High);
    let lossy = w.whep_viewer("lossy", Quality::High);
    w.run(Duration::from_secs(2));
    w.clients[lossy].loss_percent = 5;
    let (c0, l0) = (
        w.client(clean).video_frames().len(),
        w.client(lossy).video_frames().len(),
    );
    w.run(Duration::from_secs(10));
    let clean_frames = w.client(clean).video_frames().len() - c0;
    let lossy_frames = w.client(lossy).video_frames().len() - l0;
    // Each 800-byte frame is one packet: without retransmission ~5% of frames would be gone.
    assert!(
        lossy_frames * 100 >= clean_frames * 99,
        "lossy viewer got {lossy_frames} of {clean_frames} frames"
    );
}

#[test]
fn a_room_client_that_changes_network_restarts_ice_and_keeps_receiving() {
    let mut w = World::new();
    let a = w.room_publisher("ana", false);
    w.room_publisher("ben", false);
    w.run(Duration::from_secs(3));
    let remote = |w: &World| w.client(a).remote_frames().count();
    let before = remote(&w);
    assert!(before > 50);
    w.move_and_restart_ice(a);
    w.run(Duration::from_secs(5));
    let after = remote(&w);
    assert!(
        after > before + 100,
        "frames {before} -> {after} after the move"
    );
    assert_eq!(w.sfu.participant_count(), 2);
}

#[test]
fn a_room_of_eight_publishers_each_receives_all_seven_others() {
    let mut w = World::new();
    let ids: Vec<usize> = (0..8)
        .map(|i| w.room_publisher(&format!("p{i}"), false))
        .collect();
    w.run(Duration::from_secs(5));
    for &i in &ids {
        let c = w.client(i);
        let mut mids: Vec<_> = c.remote_frames().map(|f| f.mid).collect();
        mids.sort();
        mids.dedup();
        // 7 others x (video + audio).
        assert_eq!(
            mids.len(),
            14,
            "{} receives {} remote tracks",
            c.name,
            mids.len()
        );
    }
}

#[test]
fn a_muted_track_is_not_forwarded_and_only_its_owner_unmutes_it() {
    use sfu::{MediaKindName, MuteTarget, SfuError, TrackSource};
    let mut w = World::new();
    let p = w.room_publisher("creator", false);
    let v = w.whep_viewer("viewer", Quality::High);
    w.run(Duration::from_secs(3));
    let (pp, vp) = (w.pid(p), w.pid(v));
    let now = w.now;
    w.sfu
        .set_muted(
            now,
            pp,
            false,
            MuteTarget::Own(TrackSource::Microphone),
            true,
        )
        .expect("the publisher mutes its audio");
    let audio_before = w.client(v).audio_frames();
    let video_before = w.client(v).video_frames().len();
    w.run(Duration::from_secs(2));
    // A frame or two already on the wire; then nothing.
    assert!(
        w.client(v).audio_frames() <= audio_before + 3,
        "audio after mute: {} -> {}",
        audio_before,
        w.client(v).audio_frames()
    );
    assert!(
        w.client(v).video_frames().len() > video_before + 40,
        "video goes on"
    );
    let tracks = w
        .sfu
        .room_tracks(&w.sfu.room_of_participant(pp).expect("room"));
    let audio = tracks
        .iter()
        .find(|t| t.kind == MediaKindName::Audio)
        .expect("audio track");
    assert!(audio.muted, "the track list says muted");
    // The viewer (no moderator) can neither unmute nor mute it; a moderator may mute only.
    let now = w.now;
    let unmute = w
        .sfu
        .set_muted(now, vp, true, MuteTarget::Track(audio.id), false);
    assert!(matches!(unmute, Err(SfuError::Forbidden(_))), "{unmute:?}");
    let mute = w
        .sfu
        .set_muted(now, vp, false, MuteTarget::Track(audio.id), true);
    assert!(matches!(mute, Err(SfuError::Forbidden(_))), "{mute:?}");
    w.sfu
        .set_muted(
            now,
            pp,
            false,
            MuteTarget::Own(TrackSource::Microphone),
            false,
        )
        .expect("the publisher unmutes");
    let audio_muted = w.client(v).audio_frames();
    w.run(Duration::from_secs(2));
    assert!(
        w.client(v).audio_frames() > audio_muted + 50,
        "audio flows again"
    );
    // The publisher (a room client) was told each change.
    let told: Vec<bool> = w
        .signals_for(p)
        .iter()
        .filter_map(|s| match s {
            Signal::TrackMuted { muted, .. } => Some(*muted),
            _ => None,
        })
        .collect();
    assert_eq!(told, [true, false]);
    // A moderator removes the viewer: it is told why and leaves.
    let now = w.now;
    w.sfu.remove_by(now, pp, vp).expect("removed");
    w.run(Duration::from_millis(200));
    assert!(w
        .signals_for(v)
        .iter()
        .any(|s| matches!(s, Signal::Closed { reason } if reason == "removed by a moderator")));
}

#[test]
fn a_screen_share_is_announced_by_source_and_unpublished_when_its_sender_stops() {
    use sfu::{MediaKindName, TrackSource};
    let mut w = World::new();
    let tutor = w.room_publisher_as("tutor", false, Some(TrackSource::Screen));
    let student = w.room_publisher("student", false);
    w.run(Duration::from_secs(4));
    let tutor_pid = w.pid(tutor);
    let published: Vec<(MediaKindName, TrackSource)> = w
        .sfu
        .room_tracks("r")
        .iter()
        .filter(|t| t.participant == tutor_pid)
        .map(|t| (t.kind, t.source))
        .collect();
    assert!(
        published.contains(&(MediaKindName::Video, TrackSource::Screen))
            && published.contains(&(MediaKindName::Audio, TrackSource::Microphone)),
        "the declared video is a screen, the undeclared audio a microphone: {published:?}"
    );
    // The student's own tracks, declared nothing, are its camera and microphone.
    let student_pid = w.pid(student);
    assert!(w
        .sfu
        .room_tracks("r")
        .iter()
        .filter(|t| t.participant == student_pid)
        .all(|t| t.source == TrackSource::default_for(t.kind)));
    let screen_frames = w.client(student).remote_frames().count();
    assert!(
        screen_frames > 100,
        "the student decodes the tutor: {screen_frames}"
    );

    // The tutor stops sharing: its m-line goes inactive in a re-offer.
    w.stop_video(tutor);
    w.run(Duration::from_secs(2));
    let unpublished = w
        .signals_for(student)
        .iter()
        .filter(|s| matches!(s, Signal::TrackUnpublished { participant, .. } if *participant == tutor_pid))
        .count();
    assert_eq!(unpublished, 1, "the student is told the screen share ended");
    let left: Vec<TrackSource> = w
        .sfu
        .room_tracks("r")
        .iter()
        .filter(|t| t.participant == tutor_pid)
        .map(|t| t.source)
        .collect();
    assert_eq!(
        left,
        vec![TrackSource::Microphone],
        "the tutor's audio stays"
    );
    // The student's subscription to it was negotiated away; audio still flows.
    let audio_before = w.client(student).remote_frames().count();
    w.run(Duration::from_secs(2));
    assert!(w.client(student).remote_frames().count() > audio_before + 50);
}
