//! ICE over TCP (RFC 6544) for networks that block UDP: the media thread's TCP listener and its
//! connections, each framed as RFC 4571 (a 2-byte big-endian length before every STUN, DTLS,
//! RTP or RTCP packet).
//!
//! A connection is one remote candidate: its frames go to the core as datagrams from the
//! connection's peer address, and the core's TCP datagrams to that address are framed into the
//! connection's send buffer. Everything is bounded: connections in all and per IP before their
//! first accepted frame, the time to that frame, frame length, idle time, and the bytes a slow
//! connection may have queued. Past that bound datagrams are dropped, not queued: the
//! subscriber's congestion control sees the loss and moves it to a lower layer, where a queue
//! would only add delay.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::metrics::SfuMetrics;

/// Limits on the TCP media listener.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections from one IP that have not yet sent a frame a participant accepted.
    pub max_pending_per_ip: usize,
    /// From accept to the first accepted frame.
    pub first_frame_deadline: Duration,
    /// No frame at all for this long closes the connection (ICE consent checks come every ~5 s).
    pub idle_timeout: Duration,
    /// Bytes queued for a connection before datagrams to it are dropped.
    pub max_queued_bytes: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 2048,
            max_pending_per_ip: 16,
            first_frame_deadline: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_queued_bytes: 256 * 1024,
        }
    }
}

/// Largest frame accepted: a media packet is under the 1,200-byte MTU browsers use; STUN and DTLS
/// handshake records are fragmented to it too. The length field itself allows 65,535.
pub const MAX_FRAME: usize = 4096;

/// `SO_SNDBUF` of a media TCP connection (the kernel doubles it for its bookkeeping).
const KERNEL_SEND_BUFFER: usize = 64 * 1024;

/// Listen backlog: a burst of connections waits in the kernel rather than being answered with
/// SYN cookies and dropped (std's default is 128) while the media thread takes 64 per wake-up.
const BACKLOG: i32 = 1024;

/// The media TCP listener, with room in its accept queue for bursts.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// The frame being read: length prefix and body.
    rbuf: Box<[u8]>,
    rlen: usize,
    /// Bytes to send from `wstart`.
    wbuf: Vec<u8>,
    wstart: usize,
    accepted: Instant,
    last_frame: Option<Instant>,
    /// A participant accepted one of its frames.
    routed: bool,
    closing: Option<&'static str>,
}

impl Conn {
    fn queued(&self) -> usize {
        self.wbuf.len() - self.wstart
    }

    /// Reads what the socket has; hands each complete frame to `on_frame`, which says whether
    /// a participant accepted it.
    fn read(&mut self, now: Instant, on_frame: &mut impl FnMut(SocketAddr, &[u8]) -> bool) {
        for _ in 0..64 {
            let want = if self.rlen < 2 {
                2
            } else {
                2 + u16::from_be_bytes([self.rbuf[0], self.rbuf[1]]) as usize
            };
            if self.rlen == 2 && (want - 2 > MAX_FRAME || want == 2) {
                self.closing = Some("frame length out of range");
                return;
            }
            match self.stream.read(&mut self.rbuf[self.rlen..want]) {
                Ok(0) => {
                    self.closing = Some("closed by peer");
                    return;
                }
                Ok(n) => self.rlen += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.closing = Some("read failed");
                    return;
                }
            }
            if self.rlen == want && want > 2 {
                self.rlen = 0;
                self.last_frame = Some(now);
                let accepted = on_frame(self.peer, &self.rbuf[2..want]);
                if accepted {
                    self.routed = true;
                } else if !self.routed {
                    // The first frame names no participant: not ICE for anyone here.
                    self.closing = Some("first frame for no participant");
                    return;
                }
            }
        }
    }

    /// Writes what is queued until the socket would block.
    fn write(&mut self) {
        while self.wstart < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wstart..]) {
                Ok(0) => {
                    self.closing = Some("write returned 0");
                    return;
                }
                Ok(n) => self.wstart += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.closing = Some("write failed");
                    return;
                }
            }
        }
        if self.wstart == self.wbuf.len() {
            self.wbuf.clear();
            self.wstart = 0;
        } else if self.wstart > self.wbuf.capacity() / 2 {
            // Keep the buffer's allocation: move the unsent tail to the front.
            self.wbuf.drain(..self.wstart);
            self.wstart = 0;
        }
    }
}

/// The TCP listener and its connections, owned by the media thread.
pub struct TcpMedia {
    listener: Option<TcpListener>,
    conns: Vec<Conn>,
    /// Peer address -> index in `conns`.
    by_peer: HashMap<SocketAddr, usize>,
    limits: TcpLimits,
}

impl TcpMedia {
    /// `listener`: the media TCP port (non-blocking), or none when connections only arrive
    /// handed over from the HTTP port.
    pub fn new(listener: Option<TcpListener>, limits: TcpLimits) -> io::Result<TcpMedia> {
        if let Some(l) = &listener {
            l.set_nonblocking(true)?;
        }
        Ok(TcpMedia {
            listener,
            conns: Vec::new(),
            by_peer: HashMap::new(),
            limits,
        })
    }

    /// Adds the poll entries: the listener (if any), then each connection in order.
    pub fn pollfds(&self, fds: &mut Vec<libc::pollfd>) {
        if let Some(l) = &self.listener {
            fds.push(libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for c in &self.conns {
            let mut events = libc::POLLIN;
            if c.queued() > 0 {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
    }

    /// Services what `pollfds` added (the same entries, after `ppoll`): accepts, reads frames,
    /// writes queued bytes, and closes what misbehaved.
    pub fn service(
        &mut self,
        now: Instant,
        fds: &[libc::pollfd],
        metrics: &SfuMetrics,
        mut on_frame: impl FnMut(SocketAddr, &[u8]) -> bool,
    ) {
        let mut fds = fds.iter();
        let accept = self.listener.is_some() && fds.next().is_some_and(|f| f.revents != 0);
        for (c, f) in self.conns.iter_mut().zip(fds) {
            if f.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                c.read(now, &mut on_frame);
            }
            if f.revents & libc::POLLOUT != 0 && c.closing.is_none() {
                c.write();
            }
        }
        if accept {
            self.accept(now, metrics);
        }
        self.sweep(now, metrics);
    }

    fn accept(&mut self, now: Instant, metrics: &SfuMetrics) {
        for _ in 0..64 {
            let Some(l) = &self.listener else { return };
            match l.accept() {
                Ok((stream, peer)) => self.adopt(now, stream, peer, metrics),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: try again on the next wake-up.
                    warn!("media TCP accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Takes a connection: accepted here, or handed over by the HTTP port after its first bytes
    /// were seen to be RFC 4571 framing.
    pub fn adopt(&mut self, now: Instant, stream: TcpStream, peer: SocketAddr, m: &SfuMetrics) {
        if let Some(reason) = self.refuse(peer.ip()) {
            SfuMetrics::inc(&m.tcp_refused, 1);
            debug!(%peer, "media TCP connection refused: {reason}");
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        // A small kernel send buffer: back-pressure shows in `wbuf` (and drops) within a few
        // hundred milliseconds, not after the megabytes autotuning would let queue.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(KERNEL_SEND_BUFFER);
        if let Some(&old) = self.by_peer.get(&peer) {
            // A stale entry for a reused address: the old connection is gone.
            self.conns[old].closing = Some("replaced");
        }
        self.by_peer.insert(peer, self.conns.len());
        self.conns.push(Conn {
            stream,
            peer,
            rbuf: vec![0; 2 + MAX_FRAME].into_boxed_slice(),
            rlen: 0,
            wbuf: Vec::new(),
            wstart: 0,
            accepted: now,
            last_frame: None,
            routed: false,
            closing: None,
        });
        SfuMetrics::set(&m.tcp_connections, self.conns.len() as u64);
    }

    fn refuse(&self, ip: IpAddr) -> Option<&'static str> {
        if self.conns.len() >= self.limits.max_connections {
            return Some("max_connections");
        }
        let pending = self
            .conns
            .iter()
            .filter(|c| !c.routed && c.peer.ip() == ip)
            .count();
        (pending >= self.limits.max_pending_per_ip).then_some("max_pending_per_ip")
    }

    /// Frames one datagram for the connection from `peer`; dropped (and counted) when the
    /// connection is gone or has `max_queued_bytes` queued already.
    pub fn send(&mut self, peer: SocketAddr, contents: &[u8], m: &SfuMetrics) {
        let Some(&i) = self.by_peer.get(&peer) else {
            SfuMetrics::inc(&m.tcp_send_dropped, 1);
            return;
        };
        let c = &mut self.conns[i];
        if contents.len() > u16::MAX as usize
            || c.closing.is_some()
            || c.queued() + 2 + contents.len() > self.limits.max_queued_bytes
        {
            SfuMetrics::inc(&m.tcp_send_dropped, 1);
            return;
        }
        c.wbuf
            .extend_from_slice(&(contents.len() as u16).to_be_bytes());
        c.wbuf.extend_from_slice(contents);
    }

    /// Writes what `send` queued, as far as each socket takes it now.
    pub fn flush(&mut self) {
        for c in &mut self.conns {
            if c.queued() > 0 && c.closing.is_none() {
                c.write();
            }
        }
    }

    /// The next deadline a connection has (first frame or idle), for the poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().map(|c| self.deadline(c)).min()
    }

    fn deadline(&self, c: &Conn) -> Instant {
        if c.routed {
            c.last_frame.unwrap_or(c.accepted) + self.limits.idle_timeout
        } else {
            c.accepted + self.limits.first_frame_deadline
        }
    }

    /// Closes connections past a deadline or marked closing.
    pub fn sweep(&mut self, now: Instant, m: &SfuMetrics) {
        let mut i = 0;
        let mut removed = false;
        while i < self.conns.len() {
            let c = &self.conns[i];
            let reason = c.closing.or_else(|| {
                (now >= self.deadline(c)).then_some(if c.routed {
                    "idle"
                } else {
                    "no accepted frame in time"
                })
            });
            let Some(reason) = reason else {
                i += 1;
                continue;
            };
            let c = self.conns.swap_remove(i);
            removed = true;
            if self.by_peer.get(&c.peer) == Some(&i) {
                self.by_peer.remove(&c.peer);
            }
            if c.routed && reason == "closed by peer" {
                info!(peer = %c.peer, "media TCP connection closed");
            } else {
                if !c.routed {
                    SfuMetrics::inc(&m.tcp_refused, 1);
                }
                debug!(peer = %c.peer, routed = c.routed, "media TCP connection closed: {reason}");
            }
            // The last element moved into `i`: point its index there (unless it is a replaced
            // connection whose peer address now belongs to a newer one).
            let from = self.conns.len();
            if let Some(moved) = self.conns.get(i) {
                if self.by_peer.get(&moved.peer) == Some(&from) {
                    self.by_peer.insert(moved.peer, i);
                }
            }
        }
        if removed {
            SfuMetrics::set(&m.tcp_connections, self.conns.len() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn media(limits: TcpLimits) -> (TcpMedia, SocketAddr) {
        let l = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        (TcpMedia::new(Some(l), limits).unwrap(), addr)
    }

    /// One poll round: what `run` does for the TCP side.
    fn turn(
        t: &mut TcpMedia,
        m: &SfuMetrics,
        now: Instant,
        on_frame: impl FnMut(SocketAddr, &[u8]) -> bool,
    ) {
        let mut fds = Vec::new();
        t.pollfds(&mut fds);
        super::super::batch::wait(&mut fds, Duration::from_millis(20));
        t.service(now, &fds, m, on_frame);
    }

    #[test]
    fn frames_split_anywhere_are_reassembled_and_replies_are_framed() {
        let (mut t, addr) = media(TcpLimits::default());
        let m = SfuMetrics::default();
        let mut c = TcpStream::connect(addr).unwrap();
        // Two frames (3 and 5 bytes) written a byte at a time, with turns in between.
        let bytes = [0, 3, 1, 2, 3, 0, 5, 4, 5, 6, 7, 8];
        let mut got: Vec<Vec<u8>> = Vec::new();
        for b in bytes {
            c.write_all(&[b]).unwrap();
            for _ in 0..3 {
                turn(&mut t, &m, Instant::now(), |_, f| {
                    got.push(f.to_vec());
                    true
                });
            }
        }
        assert_eq!(got, vec![vec![1, 2, 3], vec![4, 5, 6, 7, 8]]);
        let peer = c.local_addr().unwrap();
        t.send(peer, &[9, 9], &m);
        t.flush();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, [0, 2, 9, 9]);
    }

    #[test]
    fn a_reader_that_stops_reading_has_a_bounded_queue() {
        let limits = TcpLimits::default();
        let (mut t, addr) = media(limits.clone());
        let m = SfuMetrics::default();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&[0, 1, 0]).unwrap();
        for _ in 0..5 {
            turn(&mut t, &m, Instant::now(), |_, _| true);
        }
        let peer = c.local_addr().unwrap();
        // 20 MB at a peer that never reads: the kernel's buffers fill, then ours, then drops.
        for _ in 0..20_000 {
            t.send(peer, &[7; 1000], &m);
            t.flush();
        }
        assert!(t.conns[0].queued() <= limits.max_queued_bytes);
        assert!(
            m.tcp_send_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
                > 10_000
        );
    }

    #[test]
    fn silent_and_unaccepted_connections_close_and_pending_ones_are_capped_per_address() {
        let limits = TcpLimits {
            max_pending_per_ip: 4,
            first_frame_deadline: Duration::from_millis(200),
            ..TcpLimits::default()
        };
        let (mut t, addr) = media(limits);
        let m = SfuMetrics::default();
        let clients: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let t0 = Instant::now();
        for _ in 0..10 {
            turn(&mut t, &m, t0, |_, _| true);
        }
        assert_eq!(t.conns.len(), 4, "four pending from one address kept");
        // A fifth from the same address is refused at accept.
        let _fifth = TcpStream::connect(addr).unwrap();
        turn(&mut t, &m, t0, |_, _| true);
        assert_eq!(t.conns.len(), 4);
        // Past the deadline every pending one goes.
        turn(&mut t, &m, t0 + Duration::from_millis(300), |_, _| true);
        assert!(t.conns.is_empty());
        assert!(t.next_deadline().is_none());
        drop(clients);
        // Now a frame no participant takes: closed at once.
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&[0, 1, 0]).unwrap();
        let mut n = 0;
        for _ in 0..10 {
            turn(&mut t, &m, Instant::now(), |_, _| false);
            n = n.max(t.conns.len());
        }
        assert!(t.conns.is_empty(), "closed at its first frame (seen {n})");
        let mut buf = [0u8; 1];
        assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "the server closed it");
    }
}
