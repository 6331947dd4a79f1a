//! Playlist invariants on a synthetic job: every URI a playlist names was written before it,
//! target duration covers every segment, sequence numbers and part indexes advance without
//! gaps, parts stay within the part target and sum to their segment; VOD at the end; a restart
//! continues with a discontinuity and never reuses a name.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use hls::{Object, Packager, PackagerConfig, RenditionInfo};
use m3u8_rs::{parse_master_playlist_res, parse_media_playlist_res, MediaPlaylist};

fn tracks() -> Vec<RenditionInfo> {
    vec![
        RenditionInfo {
            name: "v0".into(),
            codecs: "avc1.4d401e".into(),
            resolution: Some((640, 360)),
            frame_rate: Some(30.0),
            is_audio: false,
        },
        RenditionInfo {
            name: "audio".into(),
            codecs: "mp4a.40.2".into(),
            resolution: None,
            frame_rate: None,
            is_audio: true,
        },
    ]
}

fn cfg(epoch: &str) -> PackagerConfig {
    PackagerConfig {
        prefix: "math/b1".into(),
        epoch: epoch.into(),
        segment_target: 2.0,
        part_target: 0.5,
        window: 6,
        delete_old: false,
    }
}

/// Applies objects in order to a "bucket" and checks each playlist only names stored objects.
struct Bucket {
    keys: HashSet<String>,
    deleted: HashSet<String>,
    playlists: std::collections::HashMap<String, String>,
}

impl Bucket {
    fn new() -> Self {
        Bucket {
            keys: HashSet::new(),
            deleted: HashSet::new(),
            playlists: Default::default(),
        }
    }

    fn delete(&mut self, keys: Vec<String>) {
        for k in keys {
            assert!(self.keys.remove(&k), "deleting {k}, which is not stored");
            self.deleted.insert(k);
        }
    }

    fn apply(&mut self, objs: Vec<Object>) {
        for o in objs {
            if o.key.ends_with(".m3u8") {
                let text = String::from_utf8(o.body.clone()).expect("utf8");
                let dir = o
                    .key
                    .rsplit_once('/')
                    .map(|(d, _)| d.to_string())
                    .unwrap_or_default();
                for uri in uris(&text) {
                    let full = format!("{dir}/{uri}");
                    if text.contains("PRELOAD-HINT")
                        && text.lines().last().is_some_and(|l| l.contains(&uri))
                    {
                        continue; // a preload hint names the part to come
                    }
                    let is_playlist = uri.ends_with(".m3u8");
                    assert!(
                        is_playlist || self.keys.contains(&full),
                        "{} names {full} before it is stored",
                        o.key
                    );
                }
                self.playlists.insert(o.key.clone(), text);
            }
            assert!(
                !self.deleted.contains(&o.key)
                    && (self.keys.insert(o.key.clone()) || o.key.ends_with(".m3u8")),
                "name reused: {}",
                o.key
            );
        }
    }
}

/// Every URI in a playlist: lines that are not tags, and URI="..." attributes.
fn uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut gap = false;
    for l in text.lines() {
        if l == "#EXT-X-GAP" {
            gap = true;
        } else if !l.starts_with('#') && !l.is_empty() && std::mem::take(&mut gap) {
            // A gap names nothing a player fetches.
        } else if !l.starts_with('#') && !l.is_empty() {
            out.push(l.to_string());
        } else if let Some(i) = l.find("URI=\"") {
            let rest = &l[i + 5..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_string());
            }
        }
    }
    out
}

fn media(text: &str) -> MediaPlaylist {
    parse_media_playlist_res(text.as_bytes())
        .unwrap_or_else(|e| panic!("unparsable playlist: {e:?}\n{text}"))
}

/// Parts (DURATION, URI, INDEPENDENT) before each segment's #EXTINF, and the trailing ones.
/// (DURATION, URI) of each part.
type Parts = Vec<(f64, String)>;

fn parts_of(text: &str) -> (Vec<Parts>, Parts) {
    let mut segs = Vec::new();
    let mut cur = Vec::new();
    for l in text.lines() {
        if let Some(a) = l.strip_prefix("#EXT-X-PART:") {
            let dur: f64 = a
                .split(',')
                .find_map(|kv| kv.strip_prefix("DURATION="))
                .and_then(|v| v.parse().ok())
                .expect("duration");
            let uri = a
                .split("URI=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("uri")
                .to_string();
            cur.push((dur, uri));
        } else if l.starts_with("#EXTINF") {
            segs.push(std::mem::take(&mut cur));
        }
    }
    (segs, cur)
}

fn drive(p: &mut Packager, bucket: &mut Bucket, segments: u64, start_ms: u64) {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + start_ms);
    drive_at(p, bucket, 0, segments, t0)
}

/// Segments `first..first + n` of a run that started at a fixed time.
fn drive_from(p: &mut Packager, bucket: &mut Bucket, first: u64, n: u64) {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
    drive_at(p, bucket, first, n, t0)
}

fn drive_at(p: &mut Packager, bucket: &mut Bucket, first: u64, n: u64, t0: SystemTime) {
    bucket.apply(p.on_init("v0", vec![0; 100]));
    bucket.apply(p.on_init("audio", vec![1; 50]));
    for s in first..first + n {
        for k in 0..4u64 {
            let wall = t0 + Duration::from_millis(s * 2000 + k * 500);
            // Video parts are 500 ms; audio parts are 490.67 ms + a short one (AAC frames).
            bucket.apply(p.on_part(
                "v0",
                k == 0,
                Duration::from_millis(500),
                wall,
                vec![2; 1000 + (s * 7 + k) as usize],
            ));
            let ad = if k == 3 {
                Duration::from_micros(528_000)
            } else {
                Duration::from_micros(490_667)
            };
            bucket.apply(p.on_part("audio", k == 0, ad, wall, vec![3; 300]));
            if k == 0 {
                bucket.apply(p.masters());
            }
        }
        check_live(&bucket.playlists["math/b1/v0.m3u8"]);
    }
}

fn check_live(text: &str) {
    let pl = media(text);
    assert!(
        text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500"),
        "{text}"
    );
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.500"), "{text}");
    assert!(
        text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI="),
        "{text}"
    );
    assert!(pl.segments.len() <= 6);
    for (i, s) in pl.segments.iter().enumerate() {
        assert!(
            (s.duration.round() as u64) <= pl.target_duration,
            "EXTINF {} > target {}",
            s.duration,
            pl.target_duration
        );
        assert!(s.program_date_time.is_some());
        // Sequence: names carry the media sequence number, without gaps.
        let msn = pl.media_sequence + i as u64;
        assert!(
            s.uri.ends_with(&format!("-{msn}.m4s")),
            "{} at msn {msn}",
            s.uri
        );
    }
    let (segs, trailing) = parts_of(text);
    for (i, parts) in segs.iter().enumerate() {
        if parts.is_empty() {
            continue;
        }
        let sum: f64 = parts.iter().map(|p| p.0).sum();
        assert!(
            (sum - pl.segments[i].duration as f64).abs() < 0.002,
            "parts sum {sum} vs {}",
            pl.segments[i].duration
        );
        for (k, (d, uri)) in parts.iter().enumerate() {
            assert!(*d <= 0.5 + 1e-9 || uri.contains("audio"), "part of {d} s");
            assert!(uri.ends_with(&format!(".{k}.m4s")), "part index gap: {uri}");
        }
    }
    for (k, (_, uri)) in trailing.iter().enumerate() {
        assert!(uri.ends_with(&format!(".{k}.m4s")));
    }
}

#[test]
fn live_window_parts_and_order() {
    let mut p = Packager::new(cfg("e1"), tracks());
    let mut b = Bucket::new();
    drive(&mut p, &mut b, 20, 0);
    let live = media(&b.playlists["math/b1/v0.m3u8"]);
    assert_eq!(live.media_sequence, 19 - 6, "window of 6 complete segments");
    // The event playlist so far has everything from msn 0, without ENDLIST.
    let vod = media(&b.playlists["math/b1/v0-vod.m3u8"]);
    assert_eq!(vod.media_sequence, 0);
    assert_eq!(vod.segments.len(), 19);
    assert!(!vod.end_list);
    // Master: audio group, audio-only variant, measured bandwidth.
    let master = &b.playlists["math/b1/master.m3u8"];
    let m = parse_master_playlist_res(master.as_bytes()).expect("master parses");
    assert_eq!(m.variants.len(), 2);
    let v = m
        .variants
        .iter()
        .find(|v| v.uri == "v0.m3u8")
        .expect("video variant");
    assert_eq!(v.codecs.as_deref(), Some("avc1.4d401e,mp4a.40.2"));
    assert_eq!(v.audio.as_deref(), Some("aud"));
    assert!(v.resolution.is_some() && v.frame_rate == Some(30.0));
    let avg = v.average_bandwidth.expect("average");
    assert!(v.bandwidth >= avg && avg > 0);
    assert!(
        m.variants
            .iter()
            .any(|v| v.uri == "audio.m3u8" && v.resolution.is_none()),
        "audio-only variant"
    );
    assert!(master.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\""));
}

#[test]
fn finish_makes_vod_and_restart_continues_with_a_discontinuity() {
    let mut p = Packager::new(cfg("e1"), tracks());
    let mut b = Bucket::new();
    drive(&mut p, &mut b, 5, 0);
    // The process dies here (no finish). A new run reads the event playlist back and resumes.
    let stored = media(&b.playlists["math/b1/v0-vod.m3u8"]);
    let mut p2 = Packager::new(cfg("e2"), tracks());
    for t in ["v0", "audio"] {
        let text = &b.playlists[&p2.resume_key(t)];
        // The fifth segment was still open when the process died: its parts are lost.
        assert_eq!(
            p2.resume_from_playlist(t, text.as_bytes()).expect("resume"),
            4
        );
    }
    drive(&mut p2, &mut b, 5, 20_000);
    b.apply(p2.finish());
    let vod = media(&b.playlists["math/b1/v0-vod.m3u8"]);
    assert!(vod.end_list);
    assert_eq!(vod.segments.len(), stored.segments.len() + 5);
    let disc: Vec<usize> = vod
        .segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.discontinuity)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        disc,
        vec![stored.segments.len()],
        "one discontinuity where the restart happened"
    );
    for (i, s) in vod.segments.iter().enumerate() {
        assert!(
            s.uri.ends_with(&format!("-{i}.m4s")),
            "msn continues: {}",
            s.uri
        );
    }
    assert!(!b.playlists["math/b1/v0-vod.m3u8"].contains("EXT-X-PART:"));
    // Old segments keep the first run's init segment; the new run's follow its own.
    let maps: Vec<(usize, String)> = vod
        .segments
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map.as_ref().map(|m| (i, m.uri.clone())))
        .collect();
    assert_eq!(
        maps,
        vec![(0, "v0/e1-init.mp4".into()), (4, "v0/e2-init.mp4".into())]
    );
    // An ended broadcast is not resumed.
    let mut p3 = Packager::new(cfg("e3"), tracks());
    assert!(p3
        .resume_from_playlist("v0", b.playlists["math/b1/v0-vod.m3u8"].as_bytes())
        .is_err());
    // The live playlist became the complete VOD too.
    assert!(media(&b.playlists["math/b1/v0.m3u8"]).end_list);
}

#[test]
fn without_a_recording_old_segments_are_deleted_and_never_named_again() {
    let mut c = cfg("e1");
    c.delete_old = true;
    let mut p = Packager::new(c, tracks());
    let mut b = Bucket::new();
    let mut deleted = 0;
    for s in 0..30u64 {
        // One segment at a time; deletions follow the playlists (the uploader keeps order).
        drive_from(&mut p, &mut b, s, 1);
        let gone = p.expired();
        deleted += gone.len();
        b.delete(gone);
    }
    // 30 segments, a window of 6 kept twice over: the oldest ones went, parts and all.
    assert!(deleted > 0);
    assert!(!b.keys.contains("math/b1/v0/e1-0.m4s"));
    assert!(!b.keys.contains("math/b1/v0/e1-0.0.m4s"));
    assert!(b.keys.contains("math/b1/v0/e1-28.m4s"));
    b.apply(p.finish());
    assert!(
        !b.playlists.contains_key("math/b1/v0-vod.m3u8"),
        "no event playlist"
    );
    assert!(!b.playlists.contains_key("math/b1/vod.m3u8"));
    let last = media(&b.playlists["math/b1/v0.m3u8"]);
    assert!(last.end_list && last.segments.len() == 6);
    // A restart without a recording continues from the live playlist.
    let mut p2 = Packager::new(cfg("e2"), tracks());
    let mut c2 = cfg("e2");
    c2.delete_old = true;
    let p3 = Packager::new(c2, tracks());
    assert_eq!(p3.resume_key("v0"), "math/b1/v0.m3u8");
    assert_eq!(p2.resume_key("v0"), "math/b1/v0-vod.m3u8");
    assert!(p2.resume_from_playlist("v0", b"not a playlist").is_err());
}

/// What a killed run left open, read off its live playlist: the number viewers saw and the
/// parts stored so far; nothing for an ended playlist or garbage.
#[test]
fn open_tail_reads_the_open_segment() {
    let live = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-MAP:URI=\"audio/e1-init.mp4\"\n\
#EXT-X-PROGRAM-DATE-TIME:2026-11-23T08:14:49.546Z\n#EXTINF:2.0,\naudio/e1-0.m4s\n\
#EXT-X-PROGRAM-DATE-TIME:2026-11-23T08:14:51.546Z\n\
#EXT-X-PART:DURATION=0.49067,URI=\"audio/e1-1.0.m4s\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=0.5,URI=\"audio/e1-1.1.m4s\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"audio/e1-1.2.m4s\"\n";
    let t = hls::open_tail(live.as_bytes()).expect("open tail");
    assert_eq!(t.msn, 1);
    assert_eq!(t.init_uri, "audio/e1-init.mp4");
    assert_eq!(t.parts.len(), 2);
    assert!(t.parts[0].independent && !t.parts[1].independent);
    assert_eq!(t.parts[1].uri, "audio/e1-1.1.m4s");
    assert!((t.parts[0].duration - 0.49067).abs() < 1e-9);
    assert!(t.program_date_time_ms > 0);

    // Right after a segment closed: the number is shown (preload hint), with no parts.
    let closed = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"v0/e1-init.mp4\"\n#EXTINF:2.0,\nv0/e1-7.m4s\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"v0/e1-8.0.m4s\"\n";
    let t = hls::open_tail(closed.as_bytes()).expect("open tail");
    assert_eq!((t.msn, t.parts.len()), (8, 0));

    assert!(hls::open_tail(format!("{closed}#EXT-X-ENDLIST\n").as_bytes()).is_none());
    for junk in [
        &b""[..],
        b"\xff\xfe",
        b"#EXTM3U\n#EXT-X-PART:DURATION=x,URI=\"a\"\n",
        b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:-1\n",
    ] {
        assert!(hls::open_tail(junk).is_none(), "{junk:?}");
    }
}

fn two_rungs() -> Vec<RenditionInfo> {
    let mut t = tracks();
    t.insert(
        1,
        RenditionInfo {
            name: "v1".into(),
            codecs: "avc1.4d401f".into(),
            resolution: Some((1280, 720)),
            frame_rate: Some(30.0),
            is_audio: false,
        },
    );
    t
}

/// One 2 s segment of four 500 ms parts for `track`, starting at segment `s`.
fn segment(p: &mut Packager, b: &mut Bucket, track: &str, s: u64, t0: SystemTime) {
    for k in 0..4u64 {
        let wall = t0 + Duration::from_millis(s * 2000 + k * 500);
        b.apply(p.on_part(
            track,
            k == 0,
            Duration::from_millis(500),
            wall,
            vec![4; 900],
        ));
    }
}

fn pdt(t0: SystemTime, s: u64) -> i64 {
    (t0 + Duration::from_millis(s * 2000))
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[test]
fn a_shed_rung_keeps_its_numbering_with_gaps_and_leaves_the_masters() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
    let mut p = Packager::new(cfg("e1"), two_rungs());
    let mut b = Bucket::new();
    for t in ["v0", "v1", "audio"] {
        b.apply(p.on_init(t, vec![0; 100]));
    }
    for s in 0..3 {
        for t in ["v0", "v1", "audio"] {
            segment(&mut p, &mut b, t, s, t0);
        }
    }
    b.apply(p.masters());
    assert!(b.playlists["math/b1/master.m3u8"].contains("v1.m3u8"));
    // v1 is shed after segment 3's parts: v0 goes on; v1's open segment 3 closes as it is and
    // each segment v0 closes becomes a gap in v1.
    segment(&mut p, &mut b, "v1", 3, t0);
    p.set_listed("v1", false);
    b.apply(p.masters());
    let master = &b.playlists["math/b1/master.m3u8"];
    assert!(
        !master.contains("v1.m3u8") && master.contains("v0.m3u8"),
        "{master}"
    );
    for s in 3..7 {
        segment(&mut p, &mut b, "v0", s, t0);
        segment(&mut p, &mut b, "audio", s, t0);
        // v0 closed segment s - 1 (its segment s opened).
        b.apply(p.fill_gaps("v1", s, 2.0, pdt(t0, s - 1)));
    }
    let v1 = media(&b.playlists["math/b1/v1.m3u8"]);
    let last = v1.segments.last().expect("segments");
    assert_eq!(
        v1.media_sequence + v1.segments.len() as u64,
        6,
        "v1 lists 0..=5"
    );
    assert!(
        last.unknown_tags.iter().any(|t| t.tag == "X-GAP"),
        "{last:?}"
    );
    assert_eq!(last.duration, 2.0);
    let text = &b.playlists["math/b1/v1.m3u8"];
    assert!(text.contains("#EXT-X-GAP"), "{text}");
    assert!(
        !text.contains("PRELOAD-HINT"),
        "a shed rung hints no part: {text}"
    );
    // Segment 3 is the real one closed at the shed, 4 and 5 are gaps.
    let real: Vec<bool> = v1
        .segments
        .iter()
        .map(|s| !s.unknown_tags.iter().any(|t| t.tag == "X-GAP"))
        .collect();
    assert_eq!(real, vec![true, true, true, true, false, false]);
    // The rung comes back at segment 7 (v0 is at 6): it finds its number from v0's timeline and
    // the missing one is a gap too.
    assert_eq!(p.msn_at("v0", pdt(t0, 6)), Some(6), "listed");
    assert_eq!(p.msn_at("v0", pdt(t0, 7) + 30), Some(7), "counted on");
    b.apply(p.fill_gaps("v1", 7, 2.0, pdt(t0, 6)));
    p.set_listed("v1", true);
    segment(&mut p, &mut b, "v1", 7, t0);
    segment(&mut p, &mut b, "v0", 7, t0);
    segment(&mut p, &mut b, "v0", 8, t0);
    segment(&mut p, &mut b, "v1", 8, t0);
    b.apply(p.masters());
    assert!(b.playlists["math/b1/master.m3u8"].contains("v1.m3u8"));
    let v1 = media(&b.playlists["math/b1/v1.m3u8"]);
    let v0 = media(&b.playlists["math/b1/v0.m3u8"]);
    assert_eq!(
        v1.media_sequence + v1.segments.len() as u64,
        v0.media_sequence + v0.segments.len() as u64,
        "same numbering as v0"
    );
    assert!(v1
        .segments
        .last()
        .is_some_and(|s| s.uri.ends_with("-7.m4s")));
    // The same start times as v0, segment by segment.
    let starts = |pl: &MediaPlaylist| -> Vec<String> {
        pl.segments
            .iter()
            .map(|s| format!("{:?}", s.program_date_time))
            .collect()
    };
    let n = v1.segments.len().min(v0.segments.len());
    assert_eq!(starts(&v1)[..n], starts(&v0)[..n]);
    // At the end the VOD lists the gaps as gaps.
    b.apply(p.finish());
    let vod = &b.playlists["math/b1/v1-vod.m3u8"];
    assert_eq!(vod.matches("#EXT-X-GAP").count(), 3, "{vod}");
    assert!(vod.contains("#EXT-X-ENDLIST"));
}
