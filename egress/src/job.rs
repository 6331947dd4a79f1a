//! One egress job: transcoder events -> packager -> ordered uploads; blocking playlist
//! requests are released only once the playlist they wait for is stored.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hls::{LiveIndex, Object, Packager, PackagerConfig, Store, Uploader};
use ladders::Ladder;
use tracing::{info, warn};
use transcoder::{Event, RenditionId, TranscodeSpec, Transcoder};

use crate::job_core::{Action, JobCore, ShedPolicy, Tick};
use crate::renditions::{rendition_infos, rendition_name};
use crate::settings::HlsSettings;
use crate::source::Source;
use crate::status::{now, JobShared, JobState};

pub(crate) struct JobRun {
    pub webhooks: crate::webhook::Webhooks,
    pub prefix: String,
    pub ladder: Ladder,
    pub settings: HlsSettings,
    pub store: Arc<Store>,
    pub live: LiveIndex,
    /// Continue an earlier run's playlists under `prefix` when they are there.
    pub resume: bool,
    /// The node's encode capacity: the job's rungs are admitted from it.
    pub capacity: Arc<crate::encode_cost::Capacity>,
}

/// Runs the job to its end; the outcome is in `shared`'s status.
pub(crate) async fn run(job: JobRun, source: Source, shared: Arc<JobShared>) {
    let hooks = job.webhooks.clone();
    if let Some(s) = shared.snapshot() {
        hooks.send("egress_started", &s);
    }
    let result = run_inner(job, source, &shared).await;
    shared.update(|s| {
        s.ended_at = Some(now());
        match result {
            Ok(()) => s.state = JobState::Ended,
            Err(e) => {
                warn!(job = %s.id, error = %e, "egress job failed");
                s.state = JobState::Failed;
                s.error = Some(e);
            }
        }
    });
    if shared.abandon.load(Ordering::Relaxed) {
        // Not over: another run continues the broadcast and tells the webhooks.
        info!(job = ?shared.snapshot().map(|s| s.id), "egress job handed over");
    } else if let Some(s) = shared.snapshot() {
        info!(job = %s.id, state = ?s.state, segments = s.segments, bytes = s.bytes_stored, "egress job over");
        let event = if s.state == JobState::Failed {
            "egress_failed"
        } else {
            "egress_ended"
        };
        hooks.send(event, &s);
    }
    shared.done.send_replace(true);
}

async fn run_inner(job: JobRun, source: Source, shared: &Arc<JobShared>) -> Result<(), String> {
    let epoch = shared
        .status
        .lock()
        .map(|s| s.epoch.clone())
        .map_err(|_| "job state poisoned".to_string())?;
    // What the source sends decides the tracks: an audio-only broadcast has no video renditions.
    let (source, (video, audio, size)) = source.prepared().await?;
    let mut job = job;
    if let Some(size) = size.filter(|_| video.is_some()) {
        // Never above the source: a rung larger than the picture adds bytes, not detail.
        let (fitted, dropped) = crate::frame_size::fit_ladder(&job.ladder, size);
        if !dropped.is_empty() {
            info!(prefix = %job.prefix, source = %size, skipped = ?dropped, "egress: rungs above the source left out");
        }
        job.ladder = fitted;
        shared.update(|s| {
            s.source_size = Some(size.to_string());
            s.skipped_rungs = dropped
                .iter()
                .map(|r| format!("{r}: above the {size} source"))
                .collect();
        });
    }
    // Admission: the rungs this node can sustain beside the jobs already running.
    let mut costs = Vec::new();
    let _reservation = match video {
        Some(_) => {
            let admitted = job.capacity.admit(&job.ladder);
            if !admitted.skipped.is_empty() {
                warn!(prefix = %job.prefix, skipped = ?admitted.skipped, free = job.capacity.free(), "egress: rungs over the encode capacity left out");
            }
            job.ladder = admitted.ladder;
            costs = admitted.costs;
            let cores = admitted.reservation.cores();
            shared.update(|s| {
                s.skipped_rungs.extend(admitted.skipped);
                s.estimated_cores = (cores * 100.0).round() / 100.0;
            });
            Some(admitted.reservation)
        }
        None => None,
    };
    shared.update(|s| s.rungs = job.ladder.rungs.iter().map(|r| r.name.clone()).collect());
    let segment_target = job.ladder.keyframe_interval_s();
    let mut packager = Packager::new(
        PackagerConfig {
            prefix: job.prefix.clone(),
            epoch,
            segment_target,
            part_target: job.settings.part_s,
            window: job.settings.window,
            delete_old: !job.settings.keep_recording,
        },
        rendition_infos(&job.ladder)
            .into_iter()
            .filter(|t| {
                if t.is_audio {
                    audio.is_some()
                } else {
                    video.is_some()
                }
            })
            .collect(),
    );
    let sets = if video.is_some() {
        variant_sets(&job.ladder)
    } else {
        Vec::new()
    };
    shared.update(|s| s.variant_sets = sets.iter().map(|(n, _)| n.clone()).collect());
    packager.set_variant_sets(sets);
    if job.resume {
        let resumed = resume(&mut packager, &job.store, job.settings.part_s).await?;
        shared.update(|s| s.resumed_segments = resumed);
    }
    let uploader = Uploader::spawn(job.store.clone(), job.settings.upload_queue);
    if let Ok(mut u) = shared.uploads.lock() {
        *u = Some(uploader.stats().clone());
    }
    let keyframe = source.keyframe_requester();
    let mut spec = TranscodeSpec::new(job.ladder.clone(), video, audio);
    spec.part_duration = Duration::from_secs_f64(job.settings.part_s);
    let (tc, mut rx) = Transcoder::start(spec).map_err(|e| e.to_string())?;
    let tc = Arc::new(tc);
    let feeder = {
        let (tc, stop) = (tc.clone(), shared.stop.clone());
        tokio::task::spawn_blocking(move || source.feed(tc, stop))
    };
    let tracks: Vec<String> = packager.tracks().map(|t| t.name.clone()).collect();
    // Segments are counted, and gaps of shed rungs placed, by the lowest rung: never shed.
    let reference = match video {
        Some(_) => RenditionId::Video(0),
        None => RenditionId::Audio,
    };
    let reference_name = rendition_name(reference);
    let target = Duration::from_secs_f64(segment_target.round().max(1.0));
    let video_rungs = if video.is_some() {
        job.ladder.rungs.len()
    } else {
        0
    };
    costs.resize(video_rungs, 0.0);
    let mut core = JobCore::new(ShedPolicy::default(), costs, audio.is_some());
    let started = std::time::Instant::now();
    let mut failure: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut meter = crate::speed::SpeedMeter::default();
    let mut idle = crate::cpu::IdleMeter::default();
    let mut packets_seen = 0u64;
    let mut video_seen = (0u64, 0u64);
    // Re-added rungs whose output is not yet lined up with the others' segment numbers.
    let mut readding: std::collections::HashSet<usize> = std::collections::HashSet::new();
    let mut actions = Vec::new();
    loop {
        for a in std::mem::take(&mut actions) {
            match a {
                Action::WriteMasters => put_all(&uploader, packager.masters()).await,
                Action::GoLive => {
                    // Viewers are sent here only once the master they load is stored.
                    let shared = shared.clone();
                    uploader
                        .then(move || {
                            shared.update(|s| {
                                if s.state == JobState::Starting {
                                    s.state = JobState::Live;
                                }
                            })
                        })
                        .await;
                }
                Action::Shed { rung, reason } => {
                    let name = rendition_name(RenditionId::Video(rung));
                    warn!(job = %job.prefix, rendition = %name, %reason, "egress: rung shed");
                    tc.set_shed(rung, true);
                    readding.remove(&rung);
                    packager.set_listed(&name, false);
                    meter.forget(RenditionId::Video(rung));
                }
                Action::Readd { rung } => {
                    let name = rendition_name(RenditionId::Video(rung));
                    info!(job = %job.prefix, rendition = %name, "egress: rung re-added");
                    tc.set_shed(rung, false);
                    readding.insert(rung);
                    packager.set_listed(&name, true);
                    meter.forget(RenditionId::Video(rung));
                }
                Action::Fail(f) => {
                    failure = Some(f);
                }
            }
        }
        if failure.is_some() {
            break;
        }
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = tick.tick() => {
                let st = tc.stats();
                let input_active = st.packets_in != packets_seen;
                if input_active {
                    let ends: Vec<_> = st.rendition_ends.iter().filter(|(r, _)| !core.is_shed(*r)).copied().collect();
                    meter.sample(st.wall, &ends);
                } else {
                    // No input this second: nothing to judge the encoder by; the figures
                    // keep their last values.
                    meter.reset();
                }
                packets_seen = st.packets_in;
                let admitted = st.video_packets_admitted.saturating_sub(video_seen.0);
                let decoded = st.video_packets_decoded.saturating_sub(video_seen.1);
                video_seen = (st.video_packets_admitted, st.video_packets_decoded);
                let input_dropped = if admitted >= 50 {
                    admitted.saturating_sub(decoded) as f64 / admitted as f64
                } else {
                    0.0
                };
                let renditions = meter.renditions();
                actions = core.tick(&Tick {
                    now: started.elapsed(),
                    input_active,
                    renditions: renditions.clone(),
                    idle_cores: idle.idle_cores(),
                    input_dropped,
                });
                shared.update(|s| s.input_dropped_pct = (input_dropped * 1000.0).round() / 10.0);
                let job_speed = meter.job();
                let changes = core.changes().to_vec();
                let shed: Vec<String> = core.shed().iter().map(|i| rendition_name(RenditionId::Video(*i))).collect();
                shared.update(|s| {
                    s.packets_in = st.packets_in;
                    s.packets_rejected = st.packets_rejected;
                    s.keyframe_requests = st.keyframe_requests;
                    s.parts = st.parts_out;
                    if let Some((speed, lag)) = job_speed {
                        s.encoder_speed = speed;
                        s.lag_ms = lag;
                    }
                    if !renditions.is_empty() {
                        // A rung shed this tick still has samples in the meter: it encodes
                        // nothing now, so it has no figures.
                        s.renditions = renditions
                            .into_iter()
                            .filter(|(r, _)| !core.is_shed(*r))
                            .map(|(_, r)| r)
                            .collect();
                    }
                    s.shed_rungs = shed;
                    s.rung_changes = changes;
                });
                continue;
            }
        };
        let Some(ev) = ev else { break };
        match ev {
            Event::Init(i) => {
                for o in packager.on_init(&rendition_name(i.rendition), i.data) {
                    uploader.put(o).await;
                }
            }
            Event::Part(p) => {
                let name = rendition_name(p.rendition);
                if let RenditionId::Video(i) = p.rendition {
                    if core.is_shed(p.rendition) {
                        // Only the tail of the segment open at the shed still belongs: a shed
                        // rung starts no segment (its one held boundary frame included).
                        if p.independent || packager.state(&name).is_some_and(|s| s.open.is_none())
                        {
                            continue;
                        }
                    } else if readding.contains(&i) {
                        if !p.independent {
                            continue;
                        }
                        let pdt = pdt_ms(p.wallclock);
                        let Some(msn) = packager.msn_at(&reference_name, pdt) else {
                            continue;
                        };
                        if packager.next_msn(&name).is_some_and(|n| msn < n) {
                            // A gap already stands for this segment: start at the next.
                            continue;
                        }
                        readding.remove(&i);
                        let d = target.as_secs_f64();
                        let objs = packager.fill_gaps(&name, msn, d, pdt - (d * 1000.0) as i64);
                        put_all(&uploader, objs).await;
                    }
                }
                let before = packager.state(&name).map_or(0, |s| s.segments.len());
                let objs = packager.on_part(&name, p.independent, p.duration, p.wallclock, p.data);
                let closed = packager.state(&name).map_or(0, |s| s.segments.len()) > before;
                put_all(&uploader, objs).await;
                if let Some(pos) = packager.position(&name) {
                    let (live, key) = (job.live.clone(), format!("{}/{name}.m3u8", job.prefix));
                    uploader.then(move || live.publish(&key, pos, target)).await;
                }
                if closed {
                    if p.rendition == reference {
                        shared.update(|s| s.segments += 1);
                        // Shed (and not yet lined up) rungs keep pace with gaps.
                        let last = packager
                            .state(&name)
                            .and_then(|s| s.segments.last())
                            .map(|s| (s.msn, s.duration, s.program_date_time_ms));
                        if let Some((msn, duration, pdt)) = last.filter(|_| video.is_some()) {
                            let behind: Vec<usize> =
                                core.shed().iter().chain(readding.iter()).copied().collect();
                            for i in behind {
                                let t = rendition_name(RenditionId::Video(i));
                                let objs = packager.fill_gaps(&t, msn + 1, duration, pdt);
                                put_all(&uploader, objs).await;
                                if let Some(pos) = packager.position(&t) {
                                    let (live, key) =
                                        (job.live.clone(), format!("{}/{t}.m3u8", job.prefix));
                                    uploader.then(move || live.publish(&key, pos, target)).await;
                                }
                            }
                        }
                    }
                    for k in packager.expired() {
                        uploader.delete(k).await;
                    }
                    actions = core.segment_closed(p.rendition);
                }
            }
            Event::Error { element, message } => {
                failure = Some(format!("{element}: {message}"));
                shared.stop.store(true, Ordering::Relaxed);
                break;
            }
            Event::Finished => break,
            Event::KeyframeRequest => {
                if let Some(k) = &keyframe {
                    k();
                }
            }
            Event::Stalled { rendition, .. } => core.stalled(rendition, started.elapsed()),
            Event::Resumed { rendition } => core.resumed(rendition),
        }
    }
    // Whatever happened, what was produced becomes a finished (VOD) broadcast.
    shared.stop.store(true, Ordering::Relaxed);
    let fed = feeder.await;
    if shared.abandon.load(Ordering::Relaxed) {
        // What is stored stays; the playlists stay open for the run that takes over.
        uploader.flush().await;
        return Err("handed over to another run".into());
    }
    put_all(&uploader, packager.finish()).await;
    uploader.flush().await;
    for t in &tracks {
        job.live.end(&format!("{}/{t}.m3u8", job.prefix));
    }
    if let Some(f) = failure {
        return Err(f);
    }
    match fed {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("feeder thread: {e}")),
    }
}

/// For each shipped profile whose viewers should not be offered every rung of `ladder`, the
/// video tracks they get.
fn pdt_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn variant_sets(ladder: &Ladder) -> Vec<(String, Vec<String>)> {
    ladders::shipped_names()
        .filter_map(|name| {
            let viewer = ladders::shipped(name)?;
            let set = ladders::geo::variant_set(ladder, &viewer);
            (set.len() < ladder.rungs.len()).then(|| {
                let tracks = set
                    .into_iter()
                    .map(|i| rendition_name(RenditionId::Video(i)))
                    .collect();
                (name.to_string(), tracks)
            })
        })
        .collect()
}

async fn put_all(uploader: &Uploader, objs: Vec<Object>) {
    for o in objs {
        uploader.put(o).await;
    }
}

/// Takes over an earlier run's stored playlists; returns the segments taken over per track.
/// The segment the earlier run had open (viewers saw its number and parts) is closed from its
/// stored parts, or marked a gap when none were stored, and every track continues at the same
/// number: a number is never reused for other media.
async fn resume(packager: &mut Packager, store: &Store, part_target: f64) -> Result<usize, String> {
    let names: Vec<String> = packager.tracks().map(|t| t.name.clone()).collect();
    let mut taken = 0;
    for t in &names {
        let key = packager.resume_key(t);
        match store.get(&key).await {
            // An ended broadcast or an unreadable playlist is not continued: a new run would
            // overwrite what viewers already have.
            Ok(Some(text)) => {
                taken = packager
                    .resume_from_playlist(t, &text)
                    .map_err(|e| e.to_string())?
            }
            Ok(None) => continue,
            Err(e) => return Err(format!("reading {key}: {e}")),
        }
        let live_key = format!("{}/{t}.m3u8", packager.prefix());
        let tail = match store.get(&live_key).await {
            Ok(Some(text)) => hls::open_tail(&text),
            Ok(None) => None,
            Err(e) => return Err(format!("reading {live_key}: {e}")),
        };
        if let Some(tail) = tail.filter(|tl| Some(tl.msn) == packager.next_msn(t)) {
            let seg = close_tail(packager.prefix(), t, tail, store, part_target).await?;
            packager.append_resumed(t, seg);
        }
    }
    // Tracks stopped a segment apart continue together (gaps fill the shorter ones).
    let next = names.iter().filter_map(|t| packager.next_msn(t)).max();
    for t in &names {
        while let (Some(n), Some(want)) = (packager.next_msn(t), next) {
            if n >= want || n == 0 {
                break;
            }
            let init_uri = packager
                .state(t)
                .and_then(|s| s.segments.last())
                .map(|s| s.init_uri.clone())
                .unwrap_or_default();
            let duration = packager.config().segment_target;
            packager.append_resumed(t, gap_segment(t, n, duration, 0, init_uri));
        }
    }
    if taken > 0 {
        info!(
            prefix = packager.prefix(),
            segments = taken,
            "continuing an earlier run after a discontinuity"
        );
    }
    Ok(taken)
}

/// The earlier run's open segment as a complete one: its stored parts joined (CMAF fragments
/// concatenate into a segment), up to the first missing part; a gap when none is usable.
async fn close_tail(
    prefix: &str,
    track: &str,
    tail: hls::OpenTail,
    store: &Store,
    part_target: f64,
) -> Result<hls::SegmentEntry, String> {
    let mut body = Vec::new();
    let mut duration = 0.0;
    if tail.parts.first().is_some_and(|p| p.independent) {
        for p in &tail.parts {
            match store.get(&format!("{prefix}/{}", p.uri)).await {
                Ok(Some(b)) => {
                    body.extend_from_slice(&b);
                    duration += p.duration;
                }
                Ok(None) => break,
                Err(e) => return Err(format!("reading part {}: {e}", p.uri)),
            }
        }
    }
    if body.is_empty() {
        return Ok(gap_segment(
            track,
            tail.msn,
            part_target,
            tail.program_date_time_ms,
            tail.init_uri.into(),
        ));
    }
    // The name the earlier run would have given it (never written by it).
    let uri = tail.parts[0]
        .uri
        .strip_suffix(".0.m4s")
        .map(|u| format!("{u}.m4s"))
        .ok_or_else(|| format!("unexpected part name {}", tail.parts[0].uri))?;
    store
        .put(&Object {
            key: format!("{prefix}/{uri}"),
            body,
        })
        .await
        .map_err(|e| format!("storing {uri}: {e}"))?;
    info!(%prefix, %uri, duration, "closed the earlier run's open segment from its parts");
    Ok(hls::SegmentEntry {
        msn: tail.msn,
        uri,
        duration,
        parts: Vec::new(),
        program_date_time_ms: tail.program_date_time_ms,
        discontinuity: tail.discontinuity,
        init_uri: tail.init_uri.into(),
        gap: false,
    })
}

fn gap_segment(
    track: &str,
    msn: u64,
    duration: f64,
    pdt_ms: i64,
    init_uri: std::sync::Arc<str>,
) -> hls::SegmentEntry {
    hls::SegmentEntry {
        msn,
        uri: format!("{track}/gap-{msn}.m4s"),
        duration,
        parts: Vec::new(),
        program_date_time_ms: pdt_ms,
        discontinuity: false,
        init_uri,
        gap: true,
    }
}
