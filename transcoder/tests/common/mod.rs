//! Shared helpers for transcoder tests: real RTP from GStreamer test sources and payloaders,
//! network faults, and readers that check what came out.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use ladders::Ladder;
use rand::{Rng, SeedableRng};
#[allow(unused_imports)]
pub use transcoder::testsrc::{RtpSource, AUDIO_PT, VIDEO_PT};
use transcoder::{
    AudioInput, Event, RenditionId, TranscodeSpec, Transcoder, VideoCodec, VideoInput,
};

/// The test ladder from `codec` video and Opus audio on the test source's payload types.
pub fn test_spec(codec: VideoCodec) -> TranscodeSpec {
    TranscodeSpec::new(
        test_ladder(),
        Some(VideoInput {
            codec,
            payload_type: VIDEO_PT,
        }),
        Some(AudioInput {
            payload_type: AUDIO_PT,
        }),
    )
}

pub fn test_ladder() -> Ladder {
    transcoder::testsrc::test_ladder()
}

/// Network faults applied between sender and transcoder.
#[derive(Clone, Copy, Default, Debug)]
pub struct Faults {
    /// Share of video packets dropped.
    pub loss: f64,
    /// Share of video packets held back and sent after the next few.
    pub reorder: f64,
    /// At this time, push this many garbage datagrams.
    pub garbage_at: Option<(Duration, usize)>,
    /// At this time, change the sender's resolution.
    pub resize_at: Option<(Duration, u32, u32)>,
    /// At this time, the video SSRC (and its sequence and timestamp bases) change.
    pub ssrc_change_at: Option<Duration>,
    /// Shed this rung at the first time and add it back at the second.
    pub shed: Option<(Duration, Duration, usize)>,
}

/// Everything a job put out, by rendition.
#[derive(Default)]
pub struct Output {
    pub init: BTreeMap<RenditionId, transcoder::InitSegment>,
    pub parts: BTreeMap<RenditionId, Vec<transcoder::Part>>,
    pub keyframe_requests: usize,
    pub stalls: Vec<RenditionId>,
    pub errors: Vec<String>,
    pub finished: bool,
}

impl Output {
    fn take(&mut self, ev: Event) {
        match ev {
            Event::Init(i) => {
                self.init.insert(i.rendition, i);
            }
            Event::Part(p) => self.parts.entry(p.rendition).or_default().push(p),
            Event::KeyframeRequest => self.keyframe_requests += 1,
            Event::Stalled { rendition, .. } => self.stalls.push(rendition),
            Event::Resumed { .. } => {}
            Event::Error { element, message } => self.errors.push(format!("{element}: {message}")),
            Event::Finished => self.finished = true,
        }
    }

    /// The rendition as one fragmented MP4 file: init segment then every part.
    pub fn file(&self, r: RenditionId) -> Vec<u8> {
        let mut out = self
            .init
            .get(&r)
            .map(|i| i.data.clone())
            .unwrap_or_default();
        for p in self.parts.get(&r).into_iter().flatten() {
            out.extend_from_slice(&p.data);
        }
        out
    }
}

/// Runs a transcode of `seconds` of live source through `faults`, then finishes the job.
pub fn run(
    tc: Transcoder,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    src: &RtpSource,
    seconds: u64,
    f: Faults,
) -> (Output, transcoder::Stats) {
    let out = Arc::new(Mutex::new(Output::default()));
    let collector = {
        let out = out.clone();
        std::thread::spawn(move || {
            while let Some(ev) = rx.blocking_recv() {
                let done = matches!(ev, Event::Finished);
                out.lock().expect("lock").take(ev);
                if done {
                    break;
                }
            }
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let start = Instant::now();
    let mut held: Vec<(Vec<u8>, usize)> = Vec::new();
    let (mut garbage_done, mut resize_done) = (false, false);
    let mut ssrc_shift: Option<(u32, u16, u32)> = None;
    let mut answered = 0;
    let mut shed_state = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        let t = start.elapsed();
        if let Some((at, n)) = f.garbage_at {
            if !garbage_done && t >= at {
                garbage_done = true;
                for _ in 0..n {
                    let len = rng.random_range(1..1400);
                    let mut g: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                    if len > 12 && rng.random_bool(0.5) {
                        // Plausible headers with our payload type and SSRC: garbage payloads.
                        g[0] = 0x80;
                        g[1] = VIDEO_PT;
                    }
                    let _ = tc.push_video(&g);
                    let _ = tc.push_audio(&g);
                }
            }
        }
        if let Some((at, w, h)) = f.resize_at {
            if !resize_done && t >= at {
                resize_done = true;
                src.resize(w, h);
            }
        }
        if let Some(at) = f.ssrc_change_at {
            if ssrc_shift.is_none() && t >= at {
                ssrc_shift = Some((0x5eed_0001, 30_000, 1_000_000_000));
                src.force_keyframe();
            }
        }
        if let Some((off, on, rung)) = f.shed {
            if t >= off && shed_state == 0 {
                shed_state = 1;
                tc.set_shed(rung, true);
            }
            if t >= on && shed_state == 1 {
                shed_state = 2;
                tc.set_shed(rung, false);
            }
        }
        let mut idle = true;
        while let Some(mut p) = src.next_video() {
            idle = false;
            if let Some((ssrc, ds, dt)) = ssrc_shift {
                let seq = u16::from_be_bytes([p[2], p[3]]).wrapping_add(ds);
                let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]).wrapping_add(dt);
                p[2..4].copy_from_slice(&seq.to_be_bytes());
                p[4..8].copy_from_slice(&ts.to_be_bytes());
                p[8..12].copy_from_slice(&ssrc.to_be_bytes());
            }
            if rng.random_bool(f.loss) {
                continue;
            }
            if rng.random_bool(f.reorder) {
                held.push((p, rng.random_range(1..4)));
                continue;
            }
            let _ = tc.push_video(&p);
            for h in held.iter_mut() {
                h.1 = h.1.saturating_sub(1);
            }
            while let Some(i) = held.iter().position(|h| h.1 == 0) {
                let (p, _) = held.remove(i);
                let _ = tc.push_video(&p);
            }
        }
        while let Some(p) = src.next_audio() {
            idle = false;
            let _ = tc.push_audio(&p);
        }
        // Answer the transcoder's keyframe requests as a browser would answer a PLI.
        let asked = out.lock().expect("lock").keyframe_requests;
        if asked > answered {
            answered = asked;
            src.force_keyframe();
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    tc.finish(Duration::from_secs(10)).expect("job drains");
    let stats = tc.stats();
    let _ = collector.join();
    drop(tc);
    let out = Arc::try_unwrap(out)
        .ok()
        .expect("collector done")
        .into_inner()
        .expect("lock");
    (out, stats)
}

/// What a rendition's fragmented MP4 holds, read back independently of the transcoder:
/// decoded by GStreamer (qtdemux + decoder), timed from the boxes.
#[derive(Debug, Default)]
pub struct Readback {
    pub caps: String,
    pub width: i32,
    pub height: i32,
    pub decoded: usize,
    /// tfdt of each fragment that starts a segment, in seconds, and of every fragment.
    pub timescale: u32,
    pub fragment_starts: Vec<(f64, bool)>,
}

pub fn read_back(file: &[u8], video: bool) -> Readback {
    let mut rb = Readback::default();
    let dir = std::env::temp_dir().join(format!(
        "aula-tc-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::write(&dir, file).expect("write temp");
    let dec = if video {
        "h264parse ! avdec_h264"
    } else {
        "aacparse ! avdec_aac"
    };
    let desc = format!(
        "filesrc location={} ! qtdemux name=d d. ! {dec} name=dec ! fakesink name=sink",
        dir.display()
    );
    let p = gst::parse::launch(&desc)
        .expect("readback")
        .downcast::<gst::Pipeline>()
        .expect("pipeline");
    let count = Arc::new(Mutex::new(0usize));
    let caps = Arc::new(Mutex::new(None::<gst::Caps>));
    let sink = p.by_name("sink").expect("sink");
    let pad = sink.static_pad("sink").expect("pad");
    {
        let (count, caps) = (count.clone(), caps.clone());
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
            *count.lock().expect("lock") += 1;
            let mut c = caps.lock().expect("lock");
            if c.is_none() {
                *c = pad.current_caps();
            }
            gst::PadProbeReturn::Ok
        });
    }
    // Caps of the demuxed (compressed) stream.
    let dec_pad = p
        .by_name("dec")
        .expect("dec")
        .static_pad("sink")
        .expect("pad");
    p.set_state(gst::State::Playing).expect("play");
    let bus = p.bus().expect("bus");
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("readback failed: {}", e.error()),
            _ => {}
        }
    }
    if let Some(c) = dec_pad.current_caps() {
        rb.caps = c.to_string();
    }
    let _ = p.set_state(gst::State::Null);
    let _ = std::fs::remove_file(&dir);
    rb.decoded = *count.lock().expect("lock");
    if let Some(c) = caps.lock().expect("lock").as_ref() {
        if let Some(s) = c.structure(0) {
            rb.width = s.get::<i32>("width").unwrap_or(0);
            rb.height = s.get::<i32>("height").unwrap_or(0);
        }
    }
    let (ts, frags) = fragment_times(file);
    rb.timescale = ts;
    rb.fragment_starts = frags;
    rb
}

/// Walks MP4 boxes: the `mdhd` timescale, and per `moof` its `tfdt` and whether its first
/// sample is a sync sample (from `trun` first-sample flags or `tfhd`/`trex` defaults).
pub fn fragment_times(file: &[u8]) -> (u32, Vec<(f64, bool)>) {
    fn boxes(mut b: &[u8]) -> Vec<(&[u8], &[u8])> {
        let mut out = Vec::new();
        while b.len() >= 8 {
            let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if size < 8 || size > b.len() {
                break;
            }
            out.push((&b[4..8], &b[8..size]));
            b = &b[size..];
        }
        out
    }
    fn find<'a>(b: &'a [u8], path: &[&[u8]]) -> Option<&'a [u8]> {
        let mut cur = b;
        for name in path {
            cur = boxes(cur).into_iter().find(|(n, _)| n == name)?.1;
        }
        Some(cur)
    }
    let mut timescale = 0;
    let mut out = Vec::new();
    for (name, body) in boxes(file) {
        if name == b"moov" {
            if let Some(m) = find(body, &[b"trak", b"mdia", b"mdhd"]) {
                let off = if m[0] == 1 { 4 + 16 } else { 4 + 8 };
                timescale = u32::from_be_bytes([m[off], m[off + 1], m[off + 2], m[off + 3]]);
            }
        }
        if name == b"moof" {
            let Some(traf) = find(body, &[b"traf"]) else {
                continue;
            };
            let Some(t) = find(traf, &[b"tfdt"]) else {
                continue;
            };
            let dt = if t[0] == 1 {
                u64::from_be_bytes([t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11]])
            } else {
                u32::from_be_bytes([t[4], t[5], t[6], t[7]]) as u64
            };
            let mut sync = false;
            if let Some(tr) = find(traf, &[b"trun"]) {
                let flags = u32::from_be_bytes([0, tr[1], tr[2], tr[3]]);
                let mut off = 8;
                if flags & 0x1 != 0 {
                    off += 4;
                }
                if flags & 0x4 != 0 {
                    let f = u32::from_be_bytes([tr[off], tr[off + 1], tr[off + 2], tr[off + 3]]);
                    sync = f & 0x0001_0000 == 0; // sample_is_non_sync_sample clear
                } else if let Some(h) = find(traf, &[b"tfhd"]) {
                    let hf = u32::from_be_bytes([0, h[1], h[2], h[3]]);
                    let mut o = 8;
                    for (bit, len) in [(0x1, 8), (0x2, 4), (0x8, 4), (0x10, 4)] {
                        if hf & bit != 0 {
                            o += len;
                        }
                    }
                    if hf & 0x20 != 0 {
                        let f = u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
                        sync = f & 0x0001_0000 == 0;
                    }
                }
            }
            out.push((dt as f64 / timescale.max(1) as f64, sync));
        }
    }
    (timescale, out)
}
