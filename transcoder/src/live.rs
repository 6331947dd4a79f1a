//! The live transcoder: builds and runs one GStreamer pipeline per job.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{debug, info, warn};

use crate::error::TranscodeError;
use crate::output::{split_list, Event, InitSegment, Part, RenditionId};
use crate::rtp_input::{Reject, RtpInput};
use crate::scaling;
use crate::schedule::{on_tick, FpsCap, Grid, PartSplitter, Split};
use crate::spec::{TranscodeSpec, VideoCodec};
use crate::x264;

/// A snapshot of a job's counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub packets_in: u64,
    pub packets_rejected: u64,
    pub keyframe_requests: u64,
    pub parts_out: u64,
    pub bytes_out: u64,
    /// Media time produced (furthest part end) and wall time since start: their ratio is the
    /// encoder speed (1.0 = real time).
    pub media_out: Duration,
    pub wall: Duration,
    /// Each rendition's furthest part end, in running time (the pipeline's clock since it
    /// started, which `wall` reads too): `wall - end` is how far it is behind live.
    pub rendition_ends: Vec<(RenditionId, Duration)>,
    /// Video packets taken in (past the RTP gate) and those that left the jitter buffer for
    /// the decoder: the difference is input the pipeline dropped because it fell behind (the
    /// input queue and the jitter buffer drop past their bounds), plus the few packets that
    /// arrived later than the jitter buffer waits and those still queued.
    pub video_packets_admitted: u64,
    pub video_packets_decoded: u64,
}

#[derive(Default)]
struct Counters {
    video_admitted: AtomicU64,
    video_to_decoder: AtomicU64,
    packets_in: AtomicU64,
    packets_rejected: AtomicU64,
    keyframe_requests: AtomicU64,
    parts_out: AtomicU64,
    bytes_out: AtomicU64,
    /// ns since `started` of the last input packet.
    last_input: AtomicU64,
    first_pts: Mutex<Option<Duration>>,
    media_end: Mutex<Duration>,
    rendition_ends: Mutex<HashMap<RenditionId, Duration>>,
    last_part: Mutex<HashMap<RenditionId, Instant>>,
    last_reject: Mutex<Option<Reject>>,
}

/// A rung's encoding state; shedding and re-adding take effect at a segment boundary, so the
/// rung's segments stay whole and a re-added rung starts with a keyframe on the grid. Frames of
/// a shed rung are dropped before its scaler: it costs nothing.
const ENCODING: u8 = 0;
/// The next boundary turns it to `SHED_AT_BOUNDARY`: players that follow the master (which
/// stops listing the rung at once) get a segment's time to move down before the gaps start.
const SHED_SOON: u8 = 4;
const SHED_AT_BOUNDARY: u8 = 1;
const SHED: u8 = 2;
const READD_AT_BOUNDARY: u8 = 3;

struct Input {
    src: gst_app::AppSrc,
    gate: Mutex<RtpInput>,
}

pub struct Transcoder {
    pipeline: gst::Pipeline,
    video: Option<Input>,
    audio: Option<Input>,
    counters: Arc<Counters>,
    started: Instant,
    stop: Arc<AtomicBool>,
    eos: Mutex<mpsc::Receiver<()>>,
    monitor: Option<JoinHandle<()>>,
    /// Each video rung's encoding state.
    rungs: Arc<Vec<AtomicU8>>,
}

/// Input waiting for a pipeline that fell behind is dropped past this (the oldest first, in a
/// leaky queue after the jitter buffer; the decoder then asks for a keyframe): a job short of CPU
/// stays this close to live instead of falling further behind without bound (the jitter buffer
/// itself queues whatever its output cannot take). Shorter hiccups (an encoder's start, a
/// keyframe) pass without loss: dropping past the jitter buffer's 200 ms latency cost the ladder
/// benchmark 5 dB of PSNR on every rung.
const INPUT_BACKLOG: Duration = Duration::from_secs(1);

/// videorate fills a hole in the input (frames lost or dropped) with copies of the last frame up
/// to this long; a longer hole stays a hole (the last frame lasts through it). Copies cost a full
/// encode on every rung: a job short of CPU that dropped input got it all back as copies to
/// encode and fell further behind.
const MAX_DUPLICATION: Duration = Duration::from_millis(500);

/// How far one rendition's branch may run ahead of the slowest: the tee waits past it. Short,
/// so the renditions stay within this of each other and a player that moves down a rung finds
/// media at its position (with 3 s here, a job short of CPU left its renditions seconds apart
/// and a switch down stalled for that long).
const RENDITION_SPREAD: Duration = Duration::from_millis(500);

/// Video tracks' MP4 timescale (ticks per second).
const VIDEO_TIMESCALE: u32 = 90_000;

/// Recent segment-boundary PTS values chosen at the tee, so each rendition keeps those frames.
type Boundaries = Arc<Mutex<VecDeque<u64>>>;

fn describe(spec: &TranscodeSpec) -> String {
    let mut d = String::new();
    let jb = spec.jitter_latency.as_millis();
    let frag = spec.segment_duration().as_nanos();
    let chunk = spec.part_duration.as_nanos();
    let mux = format!("manual-split=true fragment-duration={frag} chunk-duration={chunk}");
    if let Some(v) = spec.video {
        // videorate: constant frame rate at the ladder's top rate, so frames the decoder drops
        // (loss it could not conceal) leave a held picture, not a hole; past MAX_DUPLICATION
        // the last frame just lasts longer (no copies to encode).
        let decode = match v.codec {
            VideoCodec::Vp8 => "rtpvp8depay request-keyframe=true wait-for-keyframe=false ! vp8dec max-errors=-1",
            VideoCodec::H264 => {
                "rtph264depay request-keyframe=true wait-for-keyframe=false ! h264parse ! avdec_h264 max-errors=-1"
            }
        };
        d += &format!(
            "appsrc name=vsrc is-live=true do-timestamp=true format=time max-bytes=8000000 leaky-type=downstream \
             caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name={},payload={}\" \
             ! rtpjitterbuffer mode=none latency={jb} do-lost=true \
             ! queue name=vin max-size-buffers=0 max-size-bytes=0 max-size-time={backlog} leaky=downstream ! {decode} ! videoconvert ! videorate max-duplication-time={hold} \
             ! capsfilter name=vraw caps=video/x-raw,format=I420,framerate={fps}/1 ! tee name=vtee ",
            v.codec.encoding_name(),
            v.payload_type,
            fps = spec.ladder.max_fps(),
            backlog = INPUT_BACKLOG.as_nanos(),
            hold = MAX_DUPLICATION.as_nanos(),
        );
        // Where each rung's pictures come from: one scaler per distinct size (rungs of one
        // size share it), each fed by the source or by a larger size (`scaling`). Borders
        // (`add-borders`) are decided per scaler once its input is known (`border_probes`).
        let sizes = scaling::distinct_sizes(spec.ladder.rungs.iter().map(|r| (r.width, r.height)));
        for (k, ((w, h), from)) in sizes
            .iter()
            .zip(scaling::scale_inputs(&sizes, spec.cascade_scaling))
            .enumerate()
        {
            let input = from.map_or("vtee.".to_string(), |j| format!("vs{j}."));
            d += &format!(
                " {input} ! queue name=vsq{k} max-size-buffers=4 max-size-bytes=0 max-size-time=0 \
                 ! videoscale name=vscale{k} method=bilinear2 add-borders=false ! video/x-raw,width={w},height={h},pixel-aspect-ratio=1/1 \
                 ! tee name=vs{k} "
            );
        }
        for (i, r) in spec.ladder.rungs.iter().enumerate() {
            let k = sizes
                .iter()
                .position(|s| *s == (r.width, r.height))
                .unwrap_or(0);
            d += &format!(
                " vs{k}. ! queue name=vq{i} max-size-buffers=0 max-size-bytes=0 max-size-time={step} \
                 ! capssetter caps=video/x-raw,framerate={}/1 ! x264enc name=venc{i} ! capsfilter name=vcaps{i} caps=\"{}\" \
                 ! cmafmux name=vmux{i} {mux} ! appsink name=vsink{i} sync=false buffer-list=true ",
                r.fps.min(spec.ladder.max_fps()),
                x264::caps(r),
                step = RENDITION_SPREAD.as_nanos(),
            );
        }
    }
    if let Some(a) = spec.audio {
        let au = &spec.ladder.audio;
        d += &format!(
            " appsrc name=asrc is-live=true do-timestamp=true format=time max-bytes=2000000 leaky-type=downstream \
             caps=\"application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload={}\" \
             ! rtpjitterbuffer mode=none latency={jb} do-lost=true ! rtpopusdepay ! opusdec plc=true ! audioconvert \
             ! audioresample ! audiorate skip-to-first=true ! audio/x-raw,rate={},channels={} \
             ! avenc_aac name=aenc bitrate={} ! cmafmux name=amux {mux} ! appsink name=asink sync=false buffer-list=true",
            a.payload_type,
            au.sample_rate,
            au.channels,
            au.bitrate_kbps * 1000
        );
    }
    d
}

fn element(bin: &gst::Pipeline, name: &str) -> Result<gst::Element, TranscodeError> {
    bin.by_name(name)
        .ok_or_else(|| TranscodeError::Pipeline(format!("no element {name}")))
}

fn src_pad(bin: &gst::Pipeline, name: &str) -> Result<gst::Pad, TranscodeError> {
    element(bin, name)?
        .static_pad("src")
        .ok_or_else(|| TranscodeError::Pipeline(format!("{name} has no src pad")))
}

/// Letterboxes a scaler's output only when its input's shape is really another
/// ([`scaling::needs_borders`]), decided again whenever the input's caps change (a source
/// that turns from landscape to portrait gets borders, the rung's size stays).
fn border_probes(pipeline: &gst::Pipeline, sizes: &[(u32, u32)]) -> Result<(), TranscodeError> {
    for (k, &(w, h)) in sizes.iter().enumerate() {
        let scaler = element(pipeline, &format!("vscale{k}"))?;
        let pad = scaler
            .static_pad("sink")
            .ok_or_else(|| TranscodeError::Pipeline(format!("vscale{k} has no sink pad")))?;
        let weak = scaler.downgrade();
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            let Some(gst::EventView::Caps(c)) = info.event().map(|e| e.view()) else {
                return gst::PadProbeReturn::Ok;
            };
            let Ok(v) = gst_video::VideoInfo::from_caps(c.caps()) else {
                return gst::PadProbeReturn::Ok;
            };
            let par = v.par();
            let borders =
                scaling::needs_borders(v.width(), v.height(), (par.numer(), par.denom()), w, h);
            if let Some(scaler) = weak.upgrade() {
                scaler.set_property("add-borders", borders);
            }
            gst::PadProbeReturn::Ok
        });
    }
    Ok(())
}

/// Splits before a buffer by sending `FMP4MuxSplitNow` to the muxer (manual-split mode).
fn split_probe(pad: &gst::Pad, video: bool, grid: Option<Grid>, part: Duration) {
    let state = Mutex::new((PartSplitter::new(part), grid));
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(buf) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(pts) = buf.pts() else {
            return gst::PadProbeReturn::Ok;
        };
        let dur = buf.duration().map_or(0, |d| d.nseconds());
        let Ok(mut st) = state.lock() else {
            return gst::PadProbeReturn::Ok;
        };
        let (splitter, grid) = &mut *st;
        let segment_start = if video {
            !buf.flags().contains(gst::BufferFlags::DELTA_UNIT)
        } else {
            grid.as_mut().is_some_and(|g| g.crosses(pts.nseconds()))
        };
        let split = splitter.before(pts.nseconds(), dur, segment_start);
        drop(st);
        if split != Split::None {
            let s = gst::Structure::builder("FMP4MuxSplitNow")
                .field("chunk", split == Split::Part)
                .build();
            if let Some(peer) = pad.peer() {
                peer.send_event(gst::event::CustomDownstream::new(s));
            }
        }
        gst::PadProbeReturn::Ok
    });
}

impl Transcoder {
    /// Builds and starts the pipeline. Events (init segments, parts, status) arrive on the
    /// returned receiver until `Finished` or an `Error`.
    pub fn start(
        spec: TranscodeSpec,
    ) -> Result<(Transcoder, UnboundedReceiver<Event>), TranscodeError> {
        crate::init()?;
        spec.check()?;
        let pipeline = gst::parse::launch(&describe(&spec))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| TranscodeError::Pipeline("not a pipeline".into()))?;
        let (tx, rx) = unbounded_channel();
        let counters = Arc::new(Counters::default());
        let started = Instant::now();
        let grid = Grid::new(spec.segment_duration());
        let wall0 = SystemTime::now();

        let rungs: Arc<Vec<AtomicU8>> = Arc::new(
            (0..spec.ladder.rungs.len())
                .map(|_| AtomicU8::new(ENCODING))
                .collect(),
        );
        let mut video = None;
        if let Some(v) = spec.video {
            let src = element(&pipeline, "vsrc")?
                .downcast::<gst_app::AppSrc>()
                .map_err(|_| TranscodeError::Pipeline("vsrc is not an appsrc".into()))?;
            keyframe_request_probe(&src, &tx, &counters);
            {
                let c = counters.clone();
                src_pad(&pipeline, "vin")?.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    c.video_to_decoder.fetch_add(1, Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                });
            }
            let boundaries: Boundaries = Arc::default();
            // One place decides segment boundaries for every rendition: force an IDR there.
            let cursor = Mutex::new(grid.cursor());
            let b = boundaries.clone();
            src_pad(&pipeline, "vraw")?.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
                    return gst::PadProbeReturn::Ok;
                };
                // Every rendition's frame lands on the tick it means (see on_tick).
                let pts = gst::ClockTime::from_nseconds(on_tick(pts.nseconds(), VIDEO_TIMESCALE));
                if let Some(buf) = info.buffer_mut() {
                    buf.make_mut().set_pts(pts);
                }
                if cursor.lock().is_ok_and(|mut c| c.crosses(pts.nseconds())) {
                    if let Ok(mut q) = b.lock() {
                        q.push_back(pts.nseconds());
                        if q.len() > 32 {
                            q.pop_front();
                        }
                    }
                    // "As soon as possible", not at a running time: the event travels right in
                    // front of the boundary frame, and GStreamer 1.22's encoder base class drops
                    // timed requests once x264enc's 1000 h PTS offset has entered its bookkeeping.
                    let ev = gst_video::DownstreamForceKeyUnitEvent::builder()
                        .all_headers(true)
                        .build();
                    if let Some(peer) = pad.peer() {
                        peer.send_event(ev);
                    }
                }
                gst::PadProbeReturn::Ok
            });
            border_probes(
                &pipeline,
                &scaling::distinct_sizes(spec.ladder.rungs.iter().map(|r| (r.width, r.height))),
            )?;
            for (i, rung) in spec.ladder.rungs.iter().enumerate() {
                let cap = Mutex::new(FpsCap::new(rung.fps));
                let b = boundaries.clone();
                let states = rungs.clone();
                src_pad(&pipeline, &format!("vq{i}"))?.add_probe(
                    gst::PadProbeType::BUFFER,
                    move |_, info| {
                        let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
                            return gst::PadProbeReturn::Ok;
                        };
                        let boundary = b.lock().is_ok_and(|q| q.contains(&pts.nseconds()));
                        let Some(state) = states.get(i) else {
                            return gst::PadProbeReturn::Ok;
                        };
                        match state.load(Ordering::Relaxed) {
                            SHED_SOON if boundary => {
                                state.store(SHED_AT_BOUNDARY, Ordering::Relaxed);
                            }
                            SHED_AT_BOUNDARY if boundary => {
                                // The boundary frame still goes through: the muxer closes the
                                // segment before it only when a frame follows. It then holds
                                // that one-frame segment until the rung returns (or the job
                                // ends) and hands it out lasting the whole pause; the job
                                // drops it, as it falls where the playlist has gaps.
                                state.store(SHED, Ordering::Relaxed);
                            }
                            SHED | READD_AT_BOUNDARY if !boundary => {
                                return gst::PadProbeReturn::Drop
                            }
                            READD_AT_BOUNDARY => {
                                state.store(ENCODING, Ordering::Relaxed);
                                if let Ok(mut c) = cap.lock() {
                                    c.reset();
                                }
                            }
                            SHED => return gst::PadProbeReturn::Drop,
                            _ => {}
                        }
                        if cap
                            .lock()
                            .map_or(true, |mut c| c.keep(pts.nseconds(), boundary))
                        {
                            gst::PadProbeReturn::Ok
                        } else {
                            gst::PadProbeReturn::Drop
                        }
                    },
                );
                x264::configure(
                    &element(&pipeline, &format!("venc{i}"))?,
                    rung,
                    &spec.x264_preset,
                );
                // The RTP video clock for every rendition (the muxer's default is the frame rate
                // x 100, per rung); with on_tick, a frame's time is exact in it.
                if let Some(pad) = element(&pipeline, &format!("vmux{i}"))?.static_pad("sink") {
                    pad.set_property("trak-timescale", VIDEO_TIMESCALE);
                }
                split_probe(
                    &src_pad(&pipeline, &format!("vcaps{i}"))?,
                    true,
                    None,
                    spec.part_duration,
                );
                let init = InitSegment {
                    rendition: RenditionId::Video(i),
                    data: Vec::new(),
                    codecs: rung.codecs(),
                    width: rung.width,
                    height: rung.height,
                };
                sink_callbacks(&pipeline, &format!("vsink{i}"), init, &tx, &counters, wall0)?;
            }
            video = Some(Input {
                src,
                gate: Mutex::new(RtpInput::new(v.payload_type, 90_000)),
            });
        }
        let mut audio = None;
        if let Some(a) = spec.audio {
            let src = element(&pipeline, "asrc")?
                .downcast::<gst_app::AppSrc>()
                .map_err(|_| TranscodeError::Pipeline("asrc is not an appsrc".into()))?;
            split_probe(
                &src_pad(&pipeline, "aenc")?,
                false,
                Some(grid.cursor()),
                spec.part_duration,
            );
            let init = InitSegment {
                rendition: RenditionId::Audio,
                data: Vec::new(),
                codecs: spec.ladder.audio.codecs().to_string(),
                width: 0,
                height: 0,
            };
            sink_callbacks(&pipeline, "asink", init, &tx, &counters, wall0)?;
            audio = Some(Input {
                src,
                gate: Mutex::new(RtpInput::new(a.payload_type, 48_000)),
            });
        }

        pipeline.set_state(gst::State::Playing)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (eos_tx, eos_rx) = mpsc::channel();
        let renditions: Vec<RenditionId> = spec
            .video
            .iter()
            .flat_map(|_| (0..spec.ladder.rungs.len()).map(RenditionId::Video))
            .chain(spec.audio.map(|_| RenditionId::Audio))
            .collect();
        let stall_after = spec.segment_duration() * 2 + Duration::from_secs(2);
        let monitor = {
            let (bus, stop, counters, rungs) = (
                pipeline
                    .bus()
                    .ok_or_else(|| TranscodeError::Pipeline("no bus".into()))?,
                stop.clone(),
                counters.clone(),
                rungs.clone(),
            );
            std::thread::Builder::new()
                .name("transcoder-monitor".into())
                .spawn(move || {
                    monitor(
                        bus,
                        stop,
                        counters,
                        rungs,
                        started,
                        renditions,
                        stall_after,
                        tx,
                        eos_tx,
                    )
                })
                .map_err(|e| TranscodeError::Pipeline(e.to_string()))?
        };
        info!(rungs = spec.ladder.rungs.len(), ladder = %spec.ladder.name, "transcoder started");
        Ok((
            Transcoder {
                pipeline,
                video,
                audio,
                counters,
                started,
                stop,
                eos: Mutex::new(eos_rx),
                monitor: Some(monitor),
                rungs,
            },
            rx,
        ))
    }

    /// Stops encoding video rung `rung` from the segment boundary after next (`shed`), or
    /// encodes it again from the next one. Its last segment before the shed is complete; meanwhile it
    /// produces nothing, except one part at the shed's boundary that arrives when it returns
    /// and lasts the whole pause (the caller drops it), and the monitor does not count the
    /// silence as a stall.
    pub fn set_shed(&self, rung: usize, shed: bool) {
        let Some(state) = self.rungs.get(rung) else {
            return;
        };
        if shed {
            let _ =
                state.compare_exchange(ENCODING, SHED_SOON, Ordering::Relaxed, Ordering::Relaxed);
            let _ = state.compare_exchange(
                READD_AT_BOUNDARY,
                SHED,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            // Silent until now by design: the stall clock starts again.
            if let Ok(mut l) = self.counters.last_part.lock() {
                l.insert(RenditionId::Video(rung), Instant::now());
            }
            let _ = state.compare_exchange(
                SHED,
                READD_AT_BOUNDARY,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            let _ = state.compare_exchange(
                SHED_AT_BOUNDARY,
                ENCODING,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            let _ =
                state.compare_exchange(SHED_SOON, ENCODING, Ordering::Relaxed, Ordering::Relaxed);
        }
        info!(
            rung,
            shed,
            "transcoder: rung {}",
            if shed { "shed" } else { "re-added" }
        );
    }

    /// Feeds one video RTP packet (as received from the network).
    pub fn push_video(&self, packet: &[u8]) -> Result<(), Reject> {
        self.push(
            self.video.as_ref(),
            packet,
            Some(&self.counters.video_admitted),
        )
    }

    /// Feeds one Opus RTP packet.
    pub fn push_audio(&self, packet: &[u8]) -> Result<(), Reject> {
        self.push(self.audio.as_ref(), packet, None)
    }

    fn push(
        &self,
        input: Option<&Input>,
        packet: &[u8],
        admitted: Option<&AtomicU64>,
    ) -> Result<(), Reject> {
        let input = input.ok_or(Reject::Closed)?;
        let c = &self.counters;
        c.packets_in.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        c.last_input.store(
            now.duration_since(self.started).as_nanos() as u64,
            Ordering::Relaxed,
        );
        let mut closed = false;
        let r = match input.gate.lock() {
            Ok(mut gate) => gate.admit(packet, now, &mut |p| {
                if input
                    .src
                    .push_buffer(gst::Buffer::from_mut_slice(p))
                    .is_err()
                {
                    closed = true;
                } else if let Some(a) = admitted {
                    a.fetch_add(1, Ordering::Relaxed);
                }
            }),
            Err(_) => Err(Reject::Closed),
        };
        if let Err(why) = r {
            c.packets_rejected.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut l) = c.last_reject.lock() {
                *l = Some(why);
            }
            debug!(%why, "rtp packet rejected");
            return Err(why);
        }
        if closed {
            return Err(Reject::Closed);
        }
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let first = c.first_pts.lock().ok().and_then(|g| *g).unwrap_or_default();
        let end = c.media_end.lock().map(|g| *g).unwrap_or_default();
        Stats {
            packets_in: c.packets_in.load(Ordering::Relaxed),
            packets_rejected: c.packets_rejected.load(Ordering::Relaxed),
            keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
            parts_out: c.parts_out.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            media_out: end.saturating_sub(first),
            // The pipeline's running time, the clock media times are on: the time since this
            // struct was made also counts building the pipeline, seconds on a starved CPU.
            wall: self.pipeline.current_running_time().map_or_else(
                || self.started.elapsed(),
                |t| Duration::from_nanos(t.nseconds()),
            ),
            video_packets_admitted: c.video_admitted.load(Ordering::Relaxed),
            video_packets_decoded: c.video_to_decoder.load(Ordering::Relaxed),
            rendition_ends: c
                .rendition_ends
                .lock()
                .map(|m| {
                    let mut v: Vec<_> = m.iter().map(|(r, e)| (*r, *e)).collect();
                    v.sort_by_key(|(r, _)| *r);
                    v
                })
                .unwrap_or_default(),
        }
    }

    /// Ends the input, drains every track (the last parts and `Finished` arrive as events) and
    /// stops the pipeline. Gives up after `timeout`.
    pub fn finish(&self, timeout: Duration) -> Result<(), TranscodeError> {
        for input in [&self.video, &self.audio].into_iter().flatten() {
            let _ = input.src.end_of_stream();
        }
        let r = match self.eos.lock() {
            Ok(rx) => rx
                .recv_timeout(timeout)
                .map_err(|_| TranscodeError::Runtime {
                    element: "pipeline".into(),
                    message: format!("did not drain within {timeout:?}"),
                }),
            Err(_) => Ok(()),
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        r
    }
}

impl Drop for Transcoder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some(h) = self.monitor.take() {
            let _ = h.join();
        }
    }
}

/// Turns depayloader keyframe requests (upstream force-key-unit events) into `KeyframeRequest`.
fn keyframe_request_probe(
    src: &gst_app::AppSrc,
    tx: &UnboundedSender<Event>,
    counters: &Arc<Counters>,
) {
    let Some(pad) = src.static_pad("src") else {
        return;
    };
    let (tx, counters) = (tx.clone(), counters.clone());
    let last: Mutex<Option<Instant>> = Mutex::new(None);
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        let is_fku = info
            .event()
            .is_some_and(|e| gst_video::ForceKeyUnitEvent::is(e));
        let due = is_fku
            && last.lock().is_ok_and(|mut l| {
                let due = l.is_none_or(|t| t.elapsed() > Duration::from_millis(250));
                if due {
                    *l = Some(Instant::now());
                }
                due
            });
        if due {
            counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(Event::KeyframeRequest);
        }
        gst::PadProbeReturn::Ok
    });
}

fn sink_callbacks(
    pipeline: &gst::Pipeline,
    name: &str,
    init: InitSegment,
    tx: &UnboundedSender<Event>,
    counters: &Arc<Counters>,
    wall0: SystemTime,
) -> Result<(), TranscodeError> {
    let sink = element(pipeline, name)?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| TranscodeError::Pipeline(format!("{name} is not an appsink")))?;
    let (tx, counters) = (tx.clone(), counters.clone());
    let rendition = init.rendition;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let chunk = match (sample.buffer_list(), sample.buffer()) {
                    (Some(list), _) => split_list(list.iter()),
                    (None, Some(buf)) => split_list(std::iter::once(buf)),
                    (None, None) => None,
                };
                let Some(mut chunk) = chunk else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                // Report running time: encoders offset PTS (x264enc by 1000 h) inside their segment.
                if let Some(seg) = sample
                    .segment()
                    .and_then(|s| s.downcast_ref::<gst::ClockTime>())
                {
                    if let Some(rt) = seg
                        .to_running_time(gst::ClockTime::from_nseconds(chunk.pts.as_nanos() as u64))
                    {
                        chunk.pts = Duration::from_nanos(rt.nseconds());
                    }
                }
                if let Some(data) = chunk.init {
                    let _ = tx.send(Event::Init(InitSegment {
                        data,
                        ..init.clone()
                    }));
                }
                if chunk.data.is_empty() {
                    return Ok(gst::FlowSuccess::Ok);
                }
                counters.parts_out.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes_out
                    .fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
                if let Ok(mut f) = counters.first_pts.lock() {
                    f.get_or_insert(chunk.pts);
                }
                if let Ok(mut e) = counters.media_end.lock() {
                    *e = (*e).max(chunk.pts + chunk.duration);
                }
                if let Ok(mut m) = counters.rendition_ends.lock() {
                    let e = m.entry(rendition).or_default();
                    *e = (*e).max(chunk.pts + chunk.duration);
                }
                if let Ok(mut l) = counters.last_part.lock() {
                    l.insert(rendition, Instant::now());
                }
                let _ = tx.send(Event::Part(Part {
                    rendition,
                    sequence: chunk.sequence,
                    independent: chunk.independent,
                    pts: chunk.pts,
                    duration: chunk.duration,
                    wallclock: wall0 + chunk.pts,
                    data: chunk.data,
                }));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(())
}

/// Watches the bus (errors, EOS) and the renditions (stalls), and summarises rejected input.
#[allow(clippy::too_many_arguments)]
fn monitor(
    bus: gst::Bus,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    rungs: Arc<Vec<AtomicU8>>,
    started: Instant,
    renditions: Vec<RenditionId>,
    stall_after: Duration,
    tx: UnboundedSender<Event>,
    eos_tx: mpsc::Sender<()>,
) {
    let mut stalled: HashMap<RenditionId, bool> = HashMap::new();
    let mut last_check = Instant::now();
    let mut rejected_reported = 0;
    let mut reported_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    let element = msg
                        .src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default();
                    let message = match e.debug() {
                        Some(d) => format!("{} ({d})", e.error()),
                        None => e.error().to_string(),
                    };
                    warn!(%element, %message, "transcoder pipeline error");
                    let _ = tx.send(Event::Error { element, message });
                    let _ = eos_tx.send(());
                }
                gst::MessageView::Warning(w) => {
                    debug!(warning = %w.error(), "transcoder pipeline warning");
                }
                gst::MessageView::Eos(_) => {
                    let _ = tx.send(Event::Finished);
                    let _ = eos_tx.send(());
                }
                _ => {}
            }
        }
        if last_check.elapsed() < Duration::from_millis(500) {
            continue;
        }
        last_check = Instant::now();
        let now = started.elapsed();
        let input_at = Duration::from_nanos(counters.last_input.load(Ordering::Relaxed));
        let input_active = now.saturating_sub(input_at) < Duration::from_secs(1);
        let last = counters
            .last_part
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        for r in &renditions {
            if let RenditionId::Video(i) = r {
                if rungs
                    .get(*i)
                    .is_some_and(|s| s.load(Ordering::Relaxed) != ENCODING)
                {
                    // Shed: silent on purpose.
                    continue;
                }
            }
            let silent = last.get(r).map_or(now, |t| t.elapsed());
            let is_stalled = stalled.entry(*r).or_insert(false);
            if !*is_stalled && input_active && silent > stall_after {
                *is_stalled = true;
                warn!(rendition = %r, ?silent, "transcoder rendition stalled");
                let _ = tx.send(Event::Stalled {
                    rendition: *r,
                    silent_for: silent,
                });
            } else if *is_stalled && silent < stall_after {
                *is_stalled = false;
                info!(rendition = %r, "transcoder rendition resumed");
                let _ = tx.send(Event::Resumed { rendition: *r });
            }
        }
        let rejected = counters.packets_rejected.load(Ordering::Relaxed);
        // A summary at most every 5 s: hostile input gets a log line, not a log flood.
        if rejected > rejected_reported && reported_at.elapsed() >= Duration::from_secs(5) {
            reported_at = Instant::now();
            let why = counters.last_reject.lock().ok().and_then(|g| *g);
            warn!(count = rejected - rejected_reported, last = ?why, "rtp input: packets rejected");
            rejected_reported = rejected;
        }
    }
}
