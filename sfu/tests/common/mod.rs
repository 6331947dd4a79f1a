//! A virtual-time world for SFU tests: the sans-IO [`Sfu`] core and str0m client peers
//! exchanging datagrams in memory. No sockets, no wall clock: a test drives minutes of media
//! in well under a second.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sfu::{
    JoinRequest, ParticipantId, PeerKind, Permissions, Quality, Sfu, SfuConfig, SfuMetrics, Signal,
};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub const SERVER: &str = "127.0.0.1:3478";
pub const LAYERS: [&str; 3] = ["q", "h", "f"];
/// Bytes per frame of each layer (30 fps): ~50, 200 and 720 kbit/s.
pub const LAYER_BYTES: [usize; 3] = [200, 800, 3000];

#[derive(Debug, Clone)]
pub struct Frame {
    pub mid: Mid,
    pub layer: u8,
    pub keyframe: bool,
    pub time: u64,
    pub len: usize,
    pub at: Instant,
}

pub struct Client {
    pub name: String,
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub pid: Option<ParticipantId>,
    pub next: Instant,
    /// When false, datagrams to and from this client are dropped (network gone).
    pub online: bool,
    /// Percent of datagrams from the SFU to this client that the network drops.
    pub loss_percent: u64,
    /// Addresses this client had before a network change: unreachable now.
    pub old_addrs: Vec<SocketAddr>,
    pub frames: Vec<Frame>,
    pub keyframe_requests: Vec<Option<Rid>>,
    pub pending: Option<SdpPendingOffer>,
    pub video: Option<Mid>,
    pub audio: Option<Mid>,
    pub simulcast: bool,
    pub connected: bool,
    /// Layers the publisher sends (dynacast may pause some).
    pub active: [bool; 3],
    want_keyframe: bool,
    frame_no: u64,
    audio_no: u64,
}

pub struct World {
    /// Milliseconds between a publisher's video frames (33: ~30 fps) and audio frames (20);
    /// `None`: no audio. Large rooms lower them to keep a test quick.
    pub video_every_ms: u64,
    pub audio_every_ms: Option<u64>,
    pub sfu: Sfu,
    pub now: Instant,
    pub start: Instant,
    pub clients: Vec<Client>,
    pub signals: Vec<(ParticipantId, Signal)>,
    pub server: SocketAddr,
    pub metrics: Arc<SfuMetrics>,
    next_port: u16,
    rng: Rng,
    /// Client index by its current address (datagrams from the SFU go to it).
    by_addr: HashMap<SocketAddr, usize>,
    /// Clients to poll this millisecond (their `Rtc` had input or media), each once.
    to_poll: Vec<usize>,
    marked: Vec<bool>,
    /// Poll every client at the start of a `run` (a test may have changed one directly).
    poll_all: bool,
}

impl World {
    pub fn new() -> World {
        let server: SocketAddr = SERVER.parse().expect("addr");
        let metrics = Arc::new(SfuMetrics::default());
        let now = Instant::now();
        World {
            sfu: Sfu::new(SfuConfig::new(server), metrics.clone()),
            now,
            start: now,
            clients: Vec::new(),
            signals: Vec::new(),
            server,
            metrics,
            next_port: 40000,
            rng: Rng(0xa11a),
            video_every_ms: 33,
            audio_every_ms: Some(20),
            by_addr: HashMap::new(),
            to_poll: Vec::new(),
            marked: Vec::new(),
            poll_all: true,
        }
    }

    fn new_client(&mut self, name: &str) -> Client {
        self.next_port += 1;
        let addr: SocketAddr = format!("127.0.0.1:{}", self.next_port)
            .parse()
            .expect("addr");
        let mut rtc = Rtc::builder().build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        Client {
            name: name.to_string(),
            rtc,
            addr,
            pid: None,
            next: self.now,
            online: true,
            loss_percent: 0,
            old_addrs: Vec::new(),
            frames: Vec::new(),
            keyframe_requests: Vec::new(),
            pending: None,
            video: None,
            audio: None,
            simulcast: false,
            connected: false,
            active: [true; 3],
            want_keyframe: true,
            frame_no: 0,
            audio_no: 0,
        }
    }

    fn join(
        &mut self,
        mut c: Client,
        kind: PeerKind,
        perms: Permissions,
        q: Quality,
        offer: Option<SdpOffer>,
    ) -> usize {
        let joined = self
            .sfu
            .join(
                self.now,
                JoinRequest {
                    room: "r".into(),
                    identity: c.name.clone(),
                    kind,
                    perms,
                    offer: offer.map(|o| o.to_sdp_string()),
                    quality: q,
                },
            )
            .expect("join");
        c.pid = Some(joined.participant);
        if let Some(a) = joined.answer {
            let pending = c.pending.take().expect("pending offer");
            let answer = SdpAnswer::from_sdp_string(&a).expect("answer parses");
            c.rtc
                .sdp_api()
                .accept_answer(pending, answer)
                .expect("answer accepted");
        }
        self.by_addr.insert(c.addr, self.clients.len());
        self.clients.push(c);
        self.marked.push(false);
        self.clients.len() - 1
    }

    /// A WHIP publisher with video (three simulcast layers, or one) and audio.
    pub fn whip_publisher(&mut self, name: &str, simulcast: bool) -> usize {
        let mut c = self.new_client(name);
        let offer = publish_offer(&mut c, simulcast);
        let perms = Permissions {
            publish: true,
            subscribe: false,
            publish_data: false,
        };
        self.join(c, PeerKind::Whip, perms, Quality::High, Some(offer))
    }

    /// A room client that publishes (offers over "signaling") and receives server offers.
    pub fn room_publisher(&mut self, name: &str, simulcast: bool) -> usize {
        self.room_publisher_as(name, simulcast, None)
    }

    /// A room publisher whose offer declares its video m-line's source (a screen share).
    pub fn room_publisher_as(
        &mut self,
        name: &str,
        simulcast: bool,
        video_source: Option<sfu::TrackSource>,
    ) -> usize {
        let c = self.new_client(name);
        let perms = Permissions {
            publish: true,
            subscribe: true,
            publish_data: true,
        };
        let i = self.join(c, PeerKind::Room, perms, Quality::High, None);
        let offer = publish_offer(&mut self.clients[i], simulcast);
        let pid = self.clients[i].pid.expect("pid");
        let sources: Vec<(String, sfu::TrackSource)> = video_source
            .map(|s| (self.clients[i].video.expect("video").to_string(), s))
            .into_iter()
            .collect();
        let answer = self
            .sfu
            .offer_with_sources(self.now, pid, &offer.to_sdp_string(), &sources)
            .expect("offer accepted");
        let c = &mut self.clients[i];
        let pending = c.pending.take().expect("pending");
        c.rtc
            .sdp_api()
            .accept_answer(
                pending,
                SdpAnswer::from_sdp_string(&answer).expect("answer"),
            )
            .expect("accepted");
        i
    }

    /// The client stops sending video (its screen share ended): the m-line goes inactive in a
    /// re-offer, as a browser's stopped transceiver does.
    pub fn stop_video(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let mid = c.video.expect("video");
        let mut api = c.rtc.sdp_api();
        api.set_direction(mid, Direction::Inactive);
        let (offer, pending) = api.apply().expect("offer");
        self.client_offers(i, offer, pending);
        self.poll_all = true;
    }

    /// Client `i`'s (re)offer, as its signaling sends it, and the SFU's answer applied.
    fn client_offers(&mut self, i: usize, offer: SdpOffer, pending: SdpPendingOffer) {
        let pid = self.pid(i);
        let answer = self
            .sfu
            .offer(self.now, pid, &offer.to_sdp_string())
            .expect("offer accepted");
        self.clients[i]
            .rtc
            .sdp_api()
            .accept_answer(
                pending,
                SdpAnswer::from_sdp_string(&answer).expect("answer"),
            )
            .expect("answer accepted");
    }

    /// A room client on signaling only (chat, presence), with no WebRTC offer yet.
    pub fn room_listener(&mut self, name: &str) -> usize {
        let c = self.new_client(name);
        let perms = Permissions {
            publish: false,
            subscribe: true,
            publish_data: true,
        };
        self.join(c, PeerKind::Room, perms, Quality::High, None)
    }

    /// A WHEP viewer with recvonly video and audio.
    pub fn whep_viewer(&mut self, name: &str, q: Quality) -> usize {
        let mut c = self.new_client(name);
        let mut api = c.rtc.sdp_api();
        let v = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let a = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        c.video = Some(v);
        c.audio = Some(a);
        c.pending = Some(pending);
        let perms = Permissions {
            publish: false,
            subscribe: true,
            publish_data: false,
        };
        self.join(c, PeerKind::Whep, perms, q, Some(offer))
    }

    pub fn client(&self, i: usize) -> &Client {
        &self.clients[i]
    }

    pub fn pid(&self, i: usize) -> ParticipantId {
        self.clients[i].pid.expect("joined")
    }

    /// Advances virtual time by `d`, moving every datagram, timer, signal and media frame.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        self.poll_all = true;
        while self.now < end {
            self.now += Duration::from_millis(1);
            self.tick();
        }
    }

    fn mark(&mut self, i: usize) {
        if !self.marked[i] {
            self.marked[i] = true;
            self.to_poll.push(i);
        }
    }

    fn tick(&mut self) {
        let now = self.now;
        let elapsed = now.duration_since(self.start).as_millis() as u64;
        let all = std::mem::take(&mut self.poll_all);
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            let mut touched = all;
            if c.connected && c.video.is_some() && c.pending.is_none() {
                if elapsed.is_multiple_of(self.video_every_ms) && c.rid_publisher() {
                    c.send_video(now);
                    touched = true;
                }
                if let Some(a) = self.audio_every_ms {
                    if elapsed.is_multiple_of(a) && c.sends_audio() {
                        c.send_audio(now);
                        touched = true;
                    }
                }
            }
            if c.next <= now {
                let _ = c.rtc.handle_input(Input::Timeout(now));
                touched = true;
            }
            if touched {
                self.mark(i);
            }
        }
        self.sfu.handle_timeout(now);
        // Move datagrams until nothing is left in flight this millisecond.
        for _ in 0..100 {
            let mut moved = false;
            let batch = std::mem::take(&mut self.to_poll);
            for &i in &batch {
                self.marked[i] = false;
            }
            for &i in &batch {
                let out = self.clients[i].poll(now);
                for (src, dest, bytes) in out {
                    moved = true;
                    let c = &self.clients[i];
                    if dest == self.server && c.online && !c.old_addrs.contains(&src) {
                        self.sfu.handle_datagram(now, Protocol::Udp, src, &bytes);
                    }
                }
            }
            let sent: Vec<(SocketAddr, Vec<u8>)> = self
                .sfu
                .transmits()
                .map(|d| (d.destination, d.contents))
                .collect();
            for (dest, bytes) in sent {
                moved = true;
                if let Some(&i) = self.by_addr.get(&dest) {
                    let c = &mut self.clients[i];
                    let dropped = c.loss_percent > 0 && self.rng.next() % 100 < c.loss_percent;
                    if c.online && !dropped {
                        c.receive(now, self.server, &bytes);
                        self.mark(i);
                    }
                }
            }
            moved |= self.route_signals();
            if !moved && self.to_poll.is_empty() {
                break;
            }
        }
    }

    /// Answers server offers automatically and records every signal.
    fn route_signals(&mut self) -> bool {
        let mut any = false;
        while let Some((pid, s)) = self.sfu.poll_signal() {
            any = true;
            if let Some(i) = self.clients.iter().position(|c| c.pid == Some(pid)) {
                self.mark(i);
                let c = &mut self.clients[i];
                match &s {
                    Signal::Offer { sdp } => {
                        let offer = SdpOffer::from_sdp_string(sdp).expect("server offer parses");
                        let answer = c
                            .rtc
                            .sdp_api()
                            .accept_offer(offer)
                            .expect("accept server offer");
                        let _ = self.sfu.answer(self.now, pid, &answer.to_sdp_string());
                    }
                    Signal::LayersNeeded { rids, .. } => {
                        for (i, l) in LAYERS.iter().enumerate() {
                            c.active[i] = rids.iter().any(|r| r == l);
                        }
                    }
                    _ => {}
                }
            }
            self.signals.push((pid, s));
        }
        any
    }

    pub fn signals_for(&self, i: usize) -> Vec<&Signal> {
        let pid = self.pid(i);
        self.signals
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, s)| s)
            .collect()
    }
}

/// The writer for `mid` and the payload type negotiated for `codec`.
fn writer_for(
    rtc: &mut Rtc,
    mid: Mid,
    codec: Codec,
) -> Option<(str0m::media::Writer<'_>, str0m::media::Pt)> {
    let w = rtc.writer(mid)?;
    let pt = w.payload_params().find(|p| p.spec().codec == codec)?.pt();
    Some((w, pt))
}

fn publish_offer(c: &mut Client, simulcast: bool) -> SdpOffer {
    let mut api = c.rtc.sdp_api();
    let sim = simulcast.then(|| {
        let mut s = Simulcast::new();
        for l in LAYERS {
            s.add_send_layer(SimulcastLayer::new(l));
        }
        s
    });
    let v = api.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        Some("s".into()),
        Some("v".into()),
        sim,
    );
    let a = api.add_media(
        MediaKind::Audio,
        Direction::SendOnly,
        Some("s".into()),
        Some("a".into()),
        None,
    );
    let (offer, pending) = api.apply().expect("offer");
    c.video = Some(v);
    c.audio = Some(a);
    c.pending = Some(pending);
    c.simulcast = simulcast;
    offer
}

impl Client {
    fn rid_publisher(&self) -> bool {
        self.rtc
            .media(self.video.expect("video"))
            .is_some_and(|m| m.direction() == Direction::SendOnly)
    }

    fn sends_audio(&self) -> bool {
        self.audio
            .and_then(|a| self.rtc.media(a))
            .is_some_and(|m| m.direction() == Direction::SendOnly)
    }

    fn send_video(&mut self, now: Instant) {
        let mid = self.video.expect("video");
        self.frame_no += 1;
        let key = self.want_keyframe || self.frame_no.is_multiple_of(90);
        self.want_keyframe = false;
        let layers: Vec<Option<usize>> = if self.simulcast {
            (0..3).map(Some).collect()
        } else {
            vec![None]
        };
        for l in layers {
            if let Some(i) = l {
                if !self.active[i] {
                    continue;
                }
            }
            let Some((w, pt)) = writer_for(&mut self.rtc, mid, Codec::Vp8) else {
                return;
            };
            let w = match l {
                Some(i) => w.rid(Rid::from(LAYERS[i])),
                None => w,
            };
            let len = LAYER_BYTES[l.unwrap_or(1)];
            let mut data = vec![0u8; len];
            // VP8 frame tag: bit 0 clear = keyframe. Byte 1 names the layer for assertions.
            data[0] = if key { 0x10 } else { 0x11 };
            data[1] = l.unwrap_or(0) as u8;
            let _ = w.write(pt, now, MediaTime::from_90khz(self.frame_no * 3000), data);
        }
    }

    fn send_audio(&mut self, now: Instant) {
        let Some(mid) = self.audio else { return };
        self.audio_no += 1;
        let ts = self.audio_no * 960; // 20 ms at 48 kHz
        let Some((w, pt)) = writer_for(&mut self.rtc, mid, Codec::Opus) else {
            return;
        };
        let _ = w.audio_level(-20, true).write(
            pt,
            now,
            MediaTime::new(ts, Frequency::FORTY_EIGHT_KHZ),
            vec![0xfc; 60],
        );
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Ok(contents) = bytes.try_into() else {
            return;
        };
        let _ = self.rtc.handle_input(Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.addr,
                contents,
            },
        ));
    }

    fn poll(&mut self, now: Instant) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => out.push((t.source, t.destination, t.contents.into())),
                Ok(Output::Timeout(t)) => {
                    self.next = t.max(now);
                    break;
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => self.connected = true,
                    Event::MediaData(d) => self.frames.push(Frame {
                        mid: d.mid,
                        layer: d.data.get(1).copied().unwrap_or(0),
                        keyframe: d.is_keyframe(),
                        time: d.time.numer(),
                        len: d.data.len(),
                        at: now,
                    }),
                    Event::KeyframeRequest(r) => {
                        self.keyframe_requests.push(r.rid);
                        self.want_keyframe = true;
                    }
                    _ => {}
                },
                Err(_) => break,
            }
        }
        out
    }

    /// Video frames this client has sent (each of its layers counts once).
    pub fn video_frames_sent(&self) -> u64 {
        self.frame_no
    }

    pub fn video_frames(&self) -> Vec<&Frame> {
        self.frames
            .iter()
            .filter(|f| Some(f.mid) == self.video)
            .collect()
    }

    /// Frames received on subscriptions (not on this client's own publishing m-lines).
    pub fn remote_frames(&self) -> impl Iterator<Item = &Frame> {
        self.frames
            .iter()
            .filter(|f| Some(f.mid) != self.video && Some(f.mid) != self.audio)
    }

    pub fn audio_frames(&self) -> usize {
        self.frames
            .iter()
            .filter(|f| Some(f.mid) == self.audio)
            .count()
    }
}

/// A small deterministic PRNG (xorshift64*) for fuzz-style tests: reproducible by seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

impl World {
    /// Sends one datagram to the SFU as if from `from`.
    pub fn inject(&mut self, from: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        self.sfu.handle_datagram(now, Protocol::Udp, from, bytes);
    }

    /// A fresh client's publish offer, as SDP text (for mutation tests).
    /// Moves client `i` to a new address (a network change) and restarts ICE through the
    /// room signaling, as the room page does when ICE fails.
    pub fn move_and_restart_ice(&mut self, i: usize) {
        self.next_port += 1;
        let new: SocketAddr = format!("127.0.0.1:{}", self.next_port)
            .parse()
            .expect("addr");
        let c = &mut self.clients[i];
        c.old_addrs.push(c.addr);
        self.by_addr.remove(&c.addr);
        self.by_addr.insert(new, i);
        c.addr = new;
        let mut api = c.rtc.sdp_api();
        api.ice_restart(false);
        let (offer, pending) = api.apply().expect("restart offer");
        self.client_offers(i, offer, pending);
        // Candidates of the new network, gathered after the restart (as a browser trickles them).
        self.clients[i]
            .rtc
            .add_local_candidate(Candidate::host(new, "udp").expect("candidate"));
    }

    pub fn sample_offer(&mut self) -> String {
        let mut c = self.new_client("sample");
        publish_offer(&mut c, true).to_sdp_string()
    }
}
