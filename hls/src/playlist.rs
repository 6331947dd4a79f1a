//! Media and master playlists. The base is written by `m3u8-rs`; the LL-HLS lines it cannot
//! express (EXT-X-SERVER-CONTROL, EXT-X-PART-INF, the open segment's parts and
//! EXT-X-PRELOAD-HINT) are added around its output, and tests parse the result back.

use std::fmt::Write as _;
use std::sync::Arc;

use m3u8_rs::{ExtTag, Map, MediaPlaylist, MediaSegment};

/// One part (CMAF chunk) as a playlist names it.
#[derive(Clone, Debug, PartialEq)]
pub struct PartEntry {
    pub uri: String,
    pub duration: f64,
    pub independent: bool,
}

/// A segment: complete (`uri` set) or still open (only parts so far).
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentEntry {
    pub msn: u64,
    pub uri: String,
    pub duration: f64,
    pub parts: Vec<PartEntry>,
    /// Milliseconds since the Unix epoch of the first sample.
    pub program_date_time_ms: i64,
    pub discontinuity: bool,
    /// The init segment this segment's media needs (EXT-X-MAP); changes after a restart.
    /// Shared: every segment of a run names the same one, and a long recording's index holds
    /// one entry per segment.
    pub init_uri: Arc<str>,
    /// No media (`EXT-X-GAP`): a number a killed run had shown viewers but left no data for.
    pub gap: bool,
}

/// What a media playlist says, before rendering.
#[derive(Clone, Debug, Default)]
pub struct MediaState {
    pub init_uri: Arc<str>,
    /// Segment target duration (seconds); every segment fits within it, rounded.
    pub target_duration: f64,
    pub part_target: f64,
    /// Complete segments, oldest first.
    pub segments: Vec<SegmentEntry>,
    /// The segment being filled: its parts so far.
    pub open: Option<SegmentEntry>,
    /// URI the next part will have (EXT-X-PRELOAD-HINT).
    pub preload_hint: Option<String>,
    pub discontinuity_sequence: u64,
    pub ended: bool,
}

/// How much of a media playlist to render.
#[derive(Clone, Copy, Debug)]
pub enum View {
    /// The live sliding window: the last `segments` complete segments, parts for the last
    /// `part_segments` of them (LL-HLS asks for parts of segments within 3 target durations).
    Live {
        segments: usize,
        part_segments: usize,
    },
    /// Everything (event playlist; VOD once ended).
    Full,
}

fn pdt(ms: i64) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.fixed_offset())
}

fn part_attrs(p: &PartEntry) -> String {
    format!(
        "DURATION={:.5},URI=\"{}\"{}",
        p.duration,
        p.uri,
        if p.independent {
            ",INDEPENDENT=YES"
        } else {
            ""
        }
    )
}

fn part_tag(p: &PartEntry) -> String {
    format!("#EXT-X-PART:{}", part_attrs(p))
}

impl MediaState {
    pub fn render(&self, view: View) -> String {
        let (from, parts_from) = match view {
            View::Live {
                segments,
                part_segments,
            } => (
                self.segments.len().saturating_sub(segments),
                self.segments.len().saturating_sub(part_segments),
            ),
            View::Full => (0, self.segments.len()),
        };
        let shown = &self.segments[from..];
        let mut segs: Vec<MediaSegment> = Vec::with_capacity(shown.len());
        for (i, s) in shown.iter().enumerate() {
            let mut m = MediaSegment {
                uri: s.uri.clone(),
                duration: s.duration as f32,
                discontinuity: s.discontinuity,
                program_date_time: pdt(s.program_date_time_ms),
                ..Default::default()
            };
            // EXT-X-MAP on the first segment and wherever the init segment changes (a restart).
            if i == 0 || shown[i - 1].init_uri != s.init_uri {
                m.map = Some(Map {
                    uri: s.init_uri.to_string(),
                    ..Default::default()
                });
            }
            if from + i >= parts_from && !self.ended {
                // m3u8-rs writes a segment's unknown tags right before its #EXTINF.
                m.unknown_tags = s
                    .parts
                    .iter()
                    .map(|p| ExtTag {
                        tag: "X-PART".into(),
                        rest: Some(part_attrs(p)),
                    })
                    .collect();
            }
            if s.gap {
                m.unknown_tags.push(ExtTag {
                    tag: "X-GAP".into(),
                    rest: None,
                });
            }
            segs.push(m);
        }
        let pl = MediaPlaylist {
            version: Some(9),
            target_duration: self.target_duration.round().max(1.0) as u64,
            media_sequence: shown
                .first()
                .map_or(self.open.as_ref().map_or(0, |o| o.msn), |s| s.msn),
            // Discontinuities that slid out of the window still count.
            discontinuity_sequence: self.discontinuity_sequence
                + self.segments[..from]
                    .iter()
                    .filter(|s| s.discontinuity)
                    .count() as u64,
            end_list: self.ended,
            independent_segments: true,
            segments: segs,
            ..Default::default()
        };
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = pl.write_to(&mut out);
        let mut text = String::from_utf8_lossy(&out).into_owned();
        let mut head = String::new();
        if !self.ended {
            let _ = writeln!(
                head,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
                self.part_target * 3.0
            );
        }
        let _ = writeln!(head, "#EXT-X-PART-INF:PART-TARGET={:.3}", self.part_target);
        if let Some(at) = text.find("#EXT-X-TARGETDURATION") {
            let eol = text[at..].find('\n').map_or(text.len(), |e| at + e + 1);
            text.insert_str(eol, &head);
        }
        if !self.ended {
            if let Some(open) = &self.open {
                if shown.last().is_none_or(|s| s.init_uri != open.init_uri) {
                    let _ = writeln!(text, "#EXT-X-MAP:URI=\"{}\"", open.init_uri);
                }
                if open.discontinuity {
                    text.push_str("#EXT-X-DISCONTINUITY\n");
                }
                if let Some(d) = pdt(open.program_date_time_ms) {
                    let _ = writeln!(
                        text,
                        "#EXT-X-PROGRAM-DATE-TIME:{}",
                        d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    );
                }
                for p in &open.parts {
                    let _ = writeln!(text, "{}", part_tag(p));
                }
            }
            if let Some(h) = &self.preload_hint {
                let _ = writeln!(text, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{h}\"");
            }
        }
        text
    }
}

/// One variant of a master playlist.
#[derive(Clone, Debug)]
pub struct VariantEntry {
    pub uri: String,
    /// Peak and average bit/s, measured over the segments so far (video + audio).
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
}

/// Master playlist: an audio group and the variants (video variants reference it; the
/// audio-only variant is the audio playlist itself).
pub fn render_master(audio_uri: Option<&str>, variants: &[VariantEntry]) -> String {
    let mut t = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    if let Some(a) = audio_uri {
        let _ = writeln!(
            t,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"main\",DEFAULT=YES,AUTOSELECT=YES,URI=\"{a}\""
        );
    }
    for v in variants {
        let _ = write!(
            t,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
            v.bandwidth, v.average_bandwidth, v.codecs
        );
        if let Some((w, h)) = v.resolution {
            let _ = write!(t, ",RESOLUTION={w}x{h}");
        }
        if let Some(f) = v.frame_rate {
            let _ = write!(t, ",FRAME-RATE={f:.3}");
        }
        if audio_uri.is_some() && v.resolution.is_some() {
            t.push_str(",AUDIO=\"aud\"");
        }
        let _ = writeln!(t, "\n{}", v.uri);
    }
    t
}

/// Segments of a stored (parsed) playlist, to continue it after a restart.
pub fn segments_from(pl: &m3u8_rs::MediaPlaylist) -> Vec<SegmentEntry> {
    let mut init: Arc<str> = Arc::from("");
    pl.segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if let Some(m) = &s.map {
                init = Arc::from(m.uri.as_str());
            }
            SegmentEntry {
                msn: pl.media_sequence + i as u64,
                uri: s.uri.clone(),
                duration: s.duration as f64,
                parts: Vec::new(),
                program_date_time_ms: s.program_date_time.map_or(0, |d| d.timestamp_millis()),
                discontinuity: s.discontinuity,
                init_uri: init.clone(),
                gap: s.unknown_tags.iter().any(|t| t.tag == "X-GAP"),
            }
        })
        .collect()
}

/// The segment a live playlist showed after its last complete one (its parts so far, maybe
/// none but the preload hint): what a killed run left open. Viewers have seen its number, so a
/// run taking over must not reuse it for other media (hls.js rejects a playlist whose segment
/// changes discontinuity sequence).
#[derive(Clone, Debug, PartialEq)]
pub struct OpenTail {
    pub msn: u64,
    pub parts: Vec<PartEntry>,
    pub program_date_time_ms: i64,
    pub init_uri: String,
    pub discontinuity: bool,
}

/// Reads the open segment off a stored live playlist (`None` if ended or unreadable).
pub fn open_tail(live: &[u8]) -> Option<OpenTail> {
    let text = std::str::from_utf8(live).ok()?;
    if !text.starts_with("#EXTM3U") || text.contains("#EXT-X-ENDLIST") {
        return None;
    }
    let mut media_sequence = Some(0); // m3u8-rs leaves out a zero media sequence
    let mut complete = 0u64;
    let mut tail = OpenTail {
        msn: 0,
        parts: Vec::new(),
        program_date_time_ms: 0,
        init_uri: String::new(),
        discontinuity: false,
    };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            media_sequence = v.parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            tail.init_uri = attr(v, "URI")?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            tail.program_date_time_ms =
                chrono::DateTime::parse_from_rfc3339(v).map_or(0, |d| d.timestamp_millis());
        } else if line == "#EXT-X-DISCONTINUITY" {
            tail.discontinuity = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            tail.parts.push(PartEntry {
                uri: attr(v, "URI")?,
                duration: attr(v, "DURATION")?.parse().ok()?,
                independent: v.contains("INDEPENDENT=YES"),
            });
        } else if !line.is_empty() && !line.starts_with('#') {
            // A complete segment: whatever came before belonged to it.
            complete += 1;
            tail.parts.clear();
            tail.discontinuity = false;
        }
    }
    tail.msn = media_sequence? + complete;
    Some(tail)
}

fn attr(list: &str, name: &str) -> Option<String> {
    list.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then(|| v.trim_matches('"').to_string())
    })
}
