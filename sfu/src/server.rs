//! The IO side: one UDP socket (and ICE-TCP connections, `tcp`), one thread that owns the
//! [`Sfu`] core, and an async handle.
//!
//! Commands arrive over a channel; a one-byte datagram from the handle's waker socket wakes the
//! thread from `ppoll`. Outgoing datagrams are flushed with `sendmmsg` in batches.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc as tmpsc, oneshot};
use tracing::{info, warn};

use crate::core::{JoinRequest, Joined, Sfu, SfuConfig, TapWho};
use crate::error::SfuError;
use crate::ids::{ParticipantId, TrackId};
use crate::layer::Quality;
use crate::metrics::SfuMetrics;
use crate::signal::{ParticipantInfo, Signal, TrackInfo};
use crate::tap::Tap;

mod batch;
mod tcp;

use crate::transport::Protocol;
pub use tcp::{TcpLimits, MAX_FRAME as TCP_MAX_FRAME};

type Reply<T> = oneshot::Sender<Result<T, SfuError>>;

/// Who is in a participant's room and what they publish.
pub type RoomSnapshot = (Vec<ParticipantInfo>, Vec<TrackInfo>);

enum Command {
    Join(
        JoinRequest,
        Option<tmpsc::UnboundedSender<Signal>>,
        Reply<Joined>,
    ),
    Offer(
        ParticipantId,
        String,
        Vec<(String, crate::signal::TrackSource)>,
        Reply<String>,
    ),
    Answer(ParticipantId, String, Reply<()>),
    Candidate(ParticipantId, String, Reply<()>),
    Preference(ParticipantId, Option<TrackId>, Quality, Reply<()>),
    Leave(ParticipantId),
    Attach(
        ParticipantId,
        tmpsc::UnboundedSender<Signal>,
        Reply<RoomSnapshot>,
    ),
    Room(
        String,
        oneshot::Sender<(Vec<ParticipantInfo>, Vec<TrackInfo>)>,
    ),
    Tap(String, TapWho, Reply<crate::core::TapOpened>),
    TapKeyframe(ParticipantId),
    AppSend(ParticipantId, Vec<u8>),
    Mute(
        ParticipantId,
        bool,
        crate::signal::MuteTarget,
        bool,
        Reply<()>,
    ),
    Remove(ParticipantId, ParticipantId, Reply<()>),
    Group(
        ParticipantId,
        bool,
        ParticipantId,
        Option<String>,
        Reply<()>,
    ),
    MuteIn(String, TrackId, Reply<()>),
    RemoveIn(String, ParticipantId, Reply<()>),
    GroupIn(String, ParticipantId, Option<String>, Reply<()>),
    Rooms(oneshot::Sender<Vec<(String, usize, usize)>>),
    Data(
        String,
        Option<Vec<String>>,
        crate::signal::DataMessage,
        Reply<usize>,
    ),
    AdoptTcp(TcpStream, SocketAddr),
}

/// Cloneable async handle to the media thread.
#[derive(Clone)]
pub struct SfuHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<UdpSocket>,
    media_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    metrics: Arc<SfuMetrics>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the media socket binds (one port for every peer).
    pub bind: SocketAddr,
    /// The address announced in ICE candidates; defaults to the bound address.
    pub public_ip: Option<std::net::IpAddr>,
    pub silence_timeout: Duration,
    pub max_participants_per_room: usize,
    /// From this many room clients on, presence goes out in batches (`SfuConfig`).
    pub presence_batch_above: usize,
    /// Where room lifecycle events go (webhooks); none: not collected.
    pub events: Option<tmpsc::UnboundedSender<crate::signal::RoomEvent>>,
    /// ICE over TCP: where peers reach it (its own listener, or the HTTP port).
    pub tcp: Option<TcpMode>,
    pub tcp_limits: TcpLimits,
    /// Offer the UDP candidate (off only to prove ICE-TCP).
    pub udp_candidate: bool,
}

/// Where ICE-TCP connections come from.
#[derive(Debug, Clone, Copy)]
pub enum TcpMode {
    /// A listener of its own on this address.
    Listen(SocketAddr),
    /// The HTTP(S) port at this address hands them over ([`SfuHandle::adopt_tcp`]).
    OnHttp(SocketAddr),
}

impl SfuHandle {
    /// Binds the media socket and starts the media thread.
    pub fn start(cfg: ServerConfig) -> io::Result<SfuHandle> {
        let socket = batch::bind(cfg.bind)?;
        let bound = socket.local_addr()?;
        let mut public = bound;
        if let Some(ip) = cfg.public_ip {
            public.set_ip(ip);
        } else if bound.ip().is_unspecified() {
            public.set_ip(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        }
        let announce = |mut a: SocketAddr| {
            if let Some(ip) = cfg.public_ip {
                a.set_ip(ip);
            } else if a.ip().is_unspecified() {
                a.set_ip(public.ip());
            }
            a
        };
        let (listener, tcp_public) = match cfg.tcp {
            None => (None, None),
            Some(TcpMode::Listen(addr)) => {
                let l = tcp::listen(addr)?;
                let bound = l.local_addr()?;
                info!(%bound, announced = %announce(bound), "media TCP listener bound");
                (Some(l), Some(announce(bound)))
            }
            Some(TcpMode::OnHttp(addr)) => (None, Some(announce(addr))),
        };
        let tcp = tcp::TcpMedia::new(listener, cfg.tcp_limits.clone())?;
        let mut sfu_cfg = SfuConfig::new(public);
        sfu_cfg.tcp_addr = tcp_public;
        sfu_cfg.udp_candidate = cfg.udp_candidate;
        sfu_cfg.silence_timeout = cfg.silence_timeout;
        sfu_cfg.max_participants_per_room = cfg.max_participants_per_room;
        sfu_cfg.presence_batch_above = cfg.presence_batch_above;
        sfu_cfg.room_events = cfg.events.is_some();
        let events = cfg.events.clone();
        let metrics = Arc::new(SfuMetrics::default());
        let core = Sfu::new(sfu_cfg, metrics.clone());
        let (tx, rx) = mpsc::channel();
        let waker_bind: SocketAddr = if bound.is_ipv4() {
            "127.0.0.1:0".parse().map_err(io::Error::other)?
        } else {
            "[::1]:0".parse().map_err(io::Error::other)?
        };
        let waker = UdpSocket::bind(waker_bind)?;
        let mut wake_to = bound;
        if wake_to.ip().is_unspecified() {
            wake_to.set_ip(waker_bind.ip());
        }
        waker.connect(wake_to)?;
        let waker_addr = waker.local_addr()?;
        thread::Builder::new()
            .name("aula-media".into())
            .spawn(move || run(core, socket, tcp, rx, waker_addr, events))?;
        info!(%bound, announced = %public, "media socket bound");
        Ok(SfuHandle {
            tx,
            waker: Arc::new(waker),
            media_addr: public,
            tcp_addr: tcp_public,
            metrics,
        })
    }

    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// The ICE-TCP address announced to peers, if ICE-TCP is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Hands the media thread a TCP connection whose first bytes are RFC 4571-framed STUN
    /// (ICE-TCP on the HTTP port). Nothing of it may have been read yet.
    pub fn adopt_tcp(&self, stream: TcpStream, peer: SocketAddr) -> Result<(), SfuError> {
        self.send(Command::AdoptTcp(stream, peer))
    }

    pub fn metrics(&self) -> &Arc<SfuMetrics> {
        &self.metrics
    }

    fn send(&self, c: Command) -> Result<(), SfuError> {
        self.tx.send(c).map_err(|_| SfuError::EngineStopped)?;
        // A lost wake-up only delays the command to the next timer tick (<= 250 ms).
        let _ = self.waker.send(&[0]);
        Ok(())
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| SfuError::EngineStopped)?
    }

    /// Joins a room. Signals for the participant arrive on `signals` (room clients).
    pub async fn join(
        &self,
        req: JoinRequest,
        signals: Option<tmpsc::UnboundedSender<Signal>>,
    ) -> Result<Joined, SfuError> {
        self.ask(|r| Command::Join(req, signals, r)).await
    }

    /// A room client's (re)offer; `sources` says what its m-lines carry, by mid.
    pub async fn offer(
        &self,
        pid: ParticipantId,
        sdp: String,
        sources: Vec<(String, crate::signal::TrackSource)>,
    ) -> Result<String, SfuError> {
        self.ask(|r| Command::Offer(pid, sdp, sources, r)).await
    }

    pub async fn answer(&self, pid: ParticipantId, sdp: String) -> Result<(), SfuError> {
        self.ask(|r| Command::Answer(pid, sdp, r)).await
    }

    pub async fn candidate(&self, pid: ParticipantId, line: String) -> Result<(), SfuError> {
        self.ask(|r| Command::Candidate(pid, line, r)).await
    }

    pub async fn preference(
        &self,
        pid: ParticipantId,
        track: Option<TrackId>,
        q: Quality,
    ) -> Result<(), SfuError> {
        self.ask(|r| Command::Preference(pid, track, q, r)).await
    }

    /// Points a participant's signals at a new signaling connection (a client resuming after
    /// its WebSocket dropped). Returns the room as it is now, since signals sent while detached
    /// were lost.
    pub async fn attach(
        &self,
        pid: ParticipantId,
        signals: tmpsc::UnboundedSender<Signal>,
    ) -> Result<RoomSnapshot, SfuError> {
        self.ask(|r| Command::Attach(pid, signals, r)).await
    }

    /// Queues a message for the participant's `yjs` data channel (fire and forget).
    pub fn app_send(&self, pid: ParticipantId, data: Vec<u8>) -> Result<(), SfuError> {
        self.send(Command::AppSend(pid, data))
    }

    /// `by` (a moderator where `moderator`) mutes or unmutes a track of its room.
    pub async fn mute(
        &self,
        by: ParticipantId,
        moderator: bool,
        target: crate::signal::MuteTarget,
        muted: bool,
    ) -> Result<(), SfuError> {
        self.ask(|r| Command::Mute(by, moderator, target, muted, r))
            .await
    }

    /// A moderator `by` moves `target` to a breakout (`Some(group)`) or back to the main room.
    pub async fn set_group(
        &self,
        by: ParticipantId,
        moderator: bool,
        target: ParticipantId,
        group: Option<String>,
    ) -> Result<(), SfuError> {
        self.ask(|r| Command::Group(by, moderator, target, group, r))
            .await
    }

    /// A moderator `by` removes `target` from their room.
    pub async fn remove(&self, by: ParticipantId, target: ParticipantId) -> Result<(), SfuError> {
        self.ask(|r| Command::Remove(by, target, r)).await
    }

    /// The room service API (admin): mute a track of `room`.
    pub async fn mute_in(&self, room: &str, track: TrackId) -> Result<(), SfuError> {
        let room = room.to_string();
        self.ask(|r| Command::MuteIn(room, track, r)).await
    }

    /// The room service API (admin): remove a participant of `room`.
    /// The room service API (admin): moves `target` of `room` to a breakout or back.
    pub async fn group_in(
        &self,
        room: &str,
        target: ParticipantId,
        group: Option<String>,
    ) -> Result<(), SfuError> {
        let room = room.to_string();
        self.ask(|r| Command::GroupIn(room, target, group, r)).await
    }

    pub async fn remove_in(&self, room: &str, target: ParticipantId) -> Result<(), SfuError> {
        let room = room.to_string();
        self.ask(|r| Command::RemoveIn(room, target, r)).await
    }

    /// The room service API: an application message to `room`'s clients (or those of the
    /// identities in `to`); how many it was queued for.
    pub async fn send_data(
        &self,
        room: &str,
        to: Option<Vec<String>>,
        data: crate::signal::DataMessage,
    ) -> Result<usize, SfuError> {
        let room = room.to_string();
        self.ask(|r| Command::Data(room, to, data, r)).await
    }

    /// Every room with its participant and track counts.
    pub async fn rooms(&self) -> Result<Vec<(String, usize, usize)>, SfuError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Rooms(tx))?;
        rx.await.map_err(|_| SfuError::EngineStopped)
    }

    pub fn leave(&self, pid: ParticipantId) {
        let _ = self.send(Command::Leave(pid));
    }

    /// Copies a participant's media out of the room, for egress. Ends when it leaves.
    pub async fn tap(&self, room: &str, who: TapWho) -> Result<Tap, SfuError> {
        let room = room.to_string();
        let opened = self.ask(|r| Command::Tap(room, who, r)).await?;
        let handle = self.clone();
        let pid = opened.participant;
        Ok(Tap {
            participant: pid,
            identity: opened.identity,
            rx: opened.rx,
            dropped: opened.dropped,
            keyframe: Arc::new(move || {
                let _ = handle.send(Command::TapKeyframe(pid));
            }),
        })
    }

    pub async fn room(
        &self,
        room: String,
    ) -> Result<(Vec<ParticipantInfo>, Vec<TrackInfo>), SfuError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Room(room, tx))?;
        rx.await.map_err(|_| SfuError::EngineStopped)
    }
}

fn run(
    mut core: Sfu,
    socket: UdpSocket,
    mut tcp: tcp::TcpMedia,
    rx: mpsc::Receiver<Command>,
    waker_addr: SocketAddr,
    events: Option<tmpsc::UnboundedSender<crate::signal::RoomEvent>>,
) {
    let mut sinks: HashMap<ParticipantId, tmpsc::UnboundedSender<Signal>> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    let mut sender = batch::Sender::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let metrics = core.metrics().clone();
    loop {
        loop {
            match rx.try_recv() {
                Ok(Command::AdoptTcp(stream, peer)) => {
                    tcp.adopt(Instant::now(), stream, peer, &metrics)
                }
                Ok(cmd) => command(&mut core, &mut sinks, cmd),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    info!("media thread stopping: all handles dropped");
                    return;
                }
            }
        }
        let now = Instant::now();
        core.handle_timeout(now);
        tcp.sweep(now, &metrics);
        route_signals(&mut core, &mut sinks);
        route_events(&mut core, events.as_ref());
        flush(&mut core, &socket, &mut sender, &mut tcp, &metrics);

        let wait = [core.next_timeout(), tcp.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(250));
        fds.clear();
        fds.push(libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&socket),
            events: libc::POLLIN,
            revents: 0,
        });
        tcp.pollfds(&mut fds);
        if !batch::wait(&mut fds, wait) {
            continue;
        }
        if fds[0].revents != 0 {
            // Read what is queued (bounded, so timers and commands are not starved).
            for _ in 0..64 {
                match batch::recv(&socket, &mut buf) {
                    Ok(Some((n, source))) => {
                        if source == waker_addr {
                            continue;
                        }
                        core.handle_datagram(Instant::now(), Protocol::Udp, source, &buf[..n]);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        warn!("media socket read failed: {e}");
                        break;
                    }
                }
            }
        }
        if fds.len() > 1 {
            let now = Instant::now();
            tcp.service(now, &fds[1..], &metrics, |peer, frame| {
                core.handle_datagram(now, Protocol::Tcp, peer, frame)
            });
        }
        route_signals(&mut core, &mut sinks);
        route_events(&mut core, events.as_ref());
        flush(&mut core, &socket, &mut sender, &mut tcp, &metrics);
    }
}

/// Sends the core's datagrams: UDP ones in `sendmmsg` batches, TCP ones framed onto their
/// connections.
fn flush(
    core: &mut Sfu,
    socket: &UdpSocket,
    sender: &mut batch::Sender,
    tcp: &mut tcp::TcpMedia,
    metrics: &SfuMetrics,
) {
    let udp = core.transmits().filter_map(|d| {
        if d.proto == Protocol::Tcp {
            tcp.send(d.destination, &d.contents, metrics);
            None
        } else {
            Some(d)
        }
    });
    sender.flush(socket, udp, metrics);
    tcp.flush();
}

fn command(
    core: &mut Sfu,
    sinks: &mut HashMap<ParticipantId, tmpsc::UnboundedSender<Signal>>,
    cmd: Command,
) {
    let now = Instant::now();
    match cmd {
        Command::Join(req, sink, reply) => {
            let r = core.join(now, req);
            if let (Ok(j), Some(s)) = (&r, sink) {
                sinks.insert(j.participant, s);
            }
            let _ = reply.send(r);
        }
        Command::Offer(pid, sdp, sources, reply) => {
            let _ = reply.send(core.offer_with_sources(now, pid, &sdp, &sources));
        }
        Command::Answer(pid, sdp, reply) => {
            let _ = reply.send(core.answer(now, pid, &sdp));
        }
        Command::Candidate(pid, line, reply) => {
            let _ = reply.send(core.candidate(pid, &line));
        }
        Command::Preference(pid, t, q, reply) => {
            let _ = reply.send(core.set_preference(now, pid, t, q));
        }
        Command::Leave(pid) => {
            let _ = core.leave(now, pid);
            sinks.remove(&pid);
        }
        Command::Attach(pid, sink, reply) => {
            let r = core
                .room_of_participant(pid)
                .map(|room| (core.room_participants(&room), core.room_tracks(&room)));
            if r.is_ok() {
                sinks.insert(pid, sink);
            }
            let _ = reply.send(r);
        }
        Command::Room(name, reply) => {
            let _ = reply.send((core.room_participants(&name), core.room_tracks(&name)));
        }
        Command::Tap(room, who, reply) => {
            let _ = reply.send(core.tap(&room, &who));
        }
        Command::TapKeyframe(pid) => {
            let _ = core.tap_keyframe(now, pid);
        }
        Command::AppSend(pid, data) => {
            let _ = core.app_send(now, pid, &data);
        }
        Command::Mute(by, moderator, track, muted, reply) => {
            let _ = reply.send(core.set_muted(now, by, moderator, track, muted));
        }
        Command::Remove(by, target, reply) => {
            let _ = reply.send(core.remove_by(now, by, target));
        }
        Command::Group(by, moderator, target, group, reply) => {
            let _ = reply.send(core.set_group(now, by, moderator, target, group));
        }
        Command::MuteIn(room, track, reply) => {
            let _ = reply.send(core.mute_in(now, &room, track));
        }
        Command::GroupIn(room, target, group, reply) => {
            let _ = reply.send(core.group_in(now, &room, target, group, "the room service API"));
        }
        Command::RemoveIn(room, target, reply) => {
            let _ = reply.send(core.remove_in(now, &room, target));
        }
        Command::Rooms(reply) => {
            let _ = reply.send(core.rooms());
        }
        Command::Data(room, to, data, reply) => {
            let _ = reply.send(core.send_data(&room, to.as_deref(), &data));
        }
        // Taken by the run loop, which owns the TCP connections.
        Command::AdoptTcp(..) => {}
    }
}

fn route_events(core: &mut Sfu, events: Option<&tmpsc::UnboundedSender<crate::signal::RoomEvent>>) {
    if let Some(tx) = events {
        for e in core.drain_events() {
            let _ = tx.send(e);
        }
    }
}

fn route_signals(
    core: &mut Sfu,
    sinks: &mut HashMap<ParticipantId, tmpsc::UnboundedSender<Signal>>,
) {
    while let Some((pid, s)) = core.poll_signal() {
        let closed = matches!(s, Signal::Closed { .. });
        if let Some(sink) = sinks.get(&pid) {
            if sink.send(s).is_err() {
                sinks.remove(&pid);
            }
        }
        if closed {
            sinks.remove(&pid);
        }
    }
}
