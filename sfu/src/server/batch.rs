//! Socket plumbing the standard library lacks: waiting with sub-millisecond precision
//! (`ppoll`), non-blocking reads, and batched sends (`sendmmsg`): one syscall for a whole
//! fan-out burst instead of one per subscriber packet.
//!
//! UDP GSO joins runs of same-size datagrams to one destination (the packets of one video
//! frame to one subscriber) into one send where the kernel takes it; fan-out itself goes to
//! many destinations, which only `sendmmsg` batches.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::metrics::SfuMetrics;
use crate::outbox::Datagram;

/// Kernel buffers sized for bursts of fan-out (500 subscribers x a keyframe).
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;
/// `sendmmsg` batch size (the kernel caps one call at UIO_MAXIOV = 1024).
const BATCH: usize = 256;

pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    // Best effort: the kernel clamps to its maximum.
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Waits until one of `fds` is ready or `timeout` passes. Returns whether one is.
pub fn wait(fds: &mut [libc::pollfd], timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(60) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid slice of pollfds, a valid timespec, no signal mask.
    let n = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    n > 0
}

/// Non-blocking receive: `Ok(None)` when nothing is queued.
pub fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
    match socket.recv_from(buf) {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        // ICMP port-unreachable from a peer that went away surfaces here on Linux; not fatal.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(None),
        Err(e) => Err(e),
    }
}

/// Most segments one GSO send may carry (the kernel's UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// A GSO send is one UDP datagram to the kernel: at most 64 KiB of payload.
const GSO_MAX_BYTES: usize = 65_000;

/// Reusable buffers for `sendmmsg`; nothing is allocated per packet once warmed up.
///
/// Consecutive datagrams to the same destination with the same size (the packets of one video
/// frame to one subscriber; the last may be shorter) go out as one UDP GSO send, where the
/// kernel accepts it; the first refusal turns GSO off for the socket.
pub struct Sender {
    pending: Vec<Datagram>,
    addrs: Vec<SockAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// One control buffer per header (8-byte aligned, room for one u16 cmsg).
    cmsgs: Vec<[u64; 4]>,
    /// Index of each header's first datagram in the batch.
    first: Vec<usize>,
    gso: bool,
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

impl Sender {
    pub fn new() -> Sender {
        Sender {
            pending: Vec::with_capacity(BATCH),
            addrs: Vec::with_capacity(BATCH),
            iovs: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
            cmsgs: Vec::with_capacity(BATCH),
            first: Vec::with_capacity(BATCH),
            gso: cfg!(target_os = "linux"),
        }
    }

    #[cfg(test)]
    pub fn gso_enabled(&self) -> bool {
        self.gso
    }

    pub fn flush(
        &mut self,
        socket: &UdpSocket,
        datagrams: impl Iterator<Item = Datagram>,
        metrics: &SfuMetrics,
    ) {
        let mut pending = std::mem::take(&mut self.pending);
        for d in datagrams {
            pending.push(d);
            if pending.len() == BATCH {
                self.send_batch(socket, &pending, metrics);
                pending.clear();
            }
        }
        if !pending.is_empty() {
            self.send_batch(socket, &pending, metrics);
            pending.clear();
        }
        self.pending = pending;
    }

    /// Groups `batch[from..]` into headers: runs for GSO, single datagrams otherwise.
    fn build(&mut self, batch: &[Datagram], from: usize) {
        self.addrs.clear();
        self.iovs.clear();
        self.hdrs.clear();
        self.cmsgs.clear();
        self.first.clear();
        for d in &batch[from..] {
            self.iovs.push(libc::iovec {
                iov_base: d.contents.as_ptr() as *mut libc::c_void,
                iov_len: d.contents.len(),
            });
        }
        let mut i = from;
        while i < batch.len() {
            let seg = batch[i].contents.len();
            let mut end = i + 1;
            if self.gso && seg > 0 {
                let mut bytes = seg;
                while end < batch.len()
                    && end - i < GSO_MAX_SEGMENTS
                    && batch[end].destination == batch[i].destination
                    && batch[end].contents.len() <= seg
                    && bytes + batch[end].contents.len() <= GSO_MAX_BYTES
                {
                    bytes += batch[end].contents.len();
                    end += 1;
                    // Only the last segment may be shorter.
                    if batch[end - 1].contents.len() < seg {
                        break;
                    }
                }
            }
            self.addrs.push(SockAddr::from(batch[i].destination));
            self.cmsgs.push([0u64; 4]);
            self.first.push(i);
            // Pointers are set once all vectors stop growing (below).
            // SAFETY: a zeroed mmsghdr is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            h.msg_hdr.msg_iovlen = end - i;
            self.hdrs.push(h);
            i = end;
        }
        let mut iov = 0usize;
        for k in 0..self.hdrs.len() {
            let count = self.hdrs[k].msg_hdr.msg_iovlen;
            let seg = self.iovs[iov].iov_len;
            let h = &mut self.hdrs[k].msg_hdr;
            h.msg_name = self.addrs[k].as_ptr() as *mut libc::c_void;
            h.msg_namelen = self.addrs[k].len();
            h.msg_iov = &mut self.iovs[iov];
            if count > 1 {
                set_gso_segment(h, &mut self.cmsgs[k], seg as u16);
            }
            iov += count;
        }
    }

    fn send_batch(&mut self, socket: &UdpSocket, batch: &[Datagram], metrics: &SfuMetrics) {
        self.build(batch, 0);
        let mut sent = 0usize;
        while sent < self.hdrs.len() {
            // SAFETY: headers point into `addrs`/`iovs`/`cmsgs`/`batch`, all alive and not
            // reallocated during this call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.hdrs[sent..].as_mut_ptr(),
                    (self.hdrs.len() - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                sent += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                // Socket buffer full: drop the rest, as a congested router would; NACK and the
                // estimator recover.
                let left = batch.len() - self.first[sent];
                metrics
                    .datagrams_send_dropped
                    .fetch_add(left as u64, Ordering::Relaxed);
                return;
            }
            if self.gso && self.hdrs[sent].msg_hdr.msg_iovlen > 1 {
                // The kernel or device refused GSO: send the rest one by one from now on.
                tracing::info!("UDP GSO refused ({e}); sending without it");
                self.gso = false;
                let from = self.first[sent];
                self.build(batch, from);
                sent = 0;
                continue;
            }
            // A per-destination error (unreachable peer): skip that datagram.
            metrics
                .datagrams_send_dropped
                .fetch_add(1, Ordering::Relaxed);
            sent += 1;
        }
    }
}

/// Attaches a `UDP_SEGMENT` control message (segment size) to `h`, stored in `buf`.
fn set_gso_segment(h: &mut libc::msghdr, buf: &mut [u64; 4], seg: u16) {
    h.msg_control = buf.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: CMSG_SPACE of a u16 (24 bytes on 64-bit) fits the 32-byte aligned buffer;
    // CMSG_FIRSTHDR/CMSG_DATA point inside it once msg_controllen is set.
    unsafe {
        h.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as _;
        let c = libc::CMSG_FIRSTHDR(h);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn dg(to: SocketAddr, len: usize, tag: u8) -> Datagram {
        let mut contents = vec![tag; len];
        contents[0] = tag;
        Datagram {
            proto: crate::transport::Protocol::Udp,
            destination: to,
            contents,
        }
    }

    #[test]
    fn runs_to_one_destination_arrive_as_separate_datagrams() {
        let tx = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind a");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind b");
        let (aa, ba) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        // A 5-packet frame to a (last one short), 2 to b, 1 to a, and a run longer than 64.
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(dg(aa, 1200, i));
        }
        v.push(dg(aa, 300, 4));
        v.push(dg(ba, 1000, 5));
        v.push(dg(ba, 1000, 6));
        v.push(dg(aa, 50, 7));
        for i in 0..70 {
            v.push(dg(ba, 100, 8 + i));
        }
        let metrics = SfuMetrics::default();
        let mut s = Sender::new();
        s.flush(&tx, v.drain(..), &metrics);
        a.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        b.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 2000];
        let mut got_a = Vec::new();
        for _ in 0..6 {
            let (n, _) = a.recv_from(&mut buf).expect("a receives");
            got_a.push((n, buf[0]));
        }
        assert_eq!(
            got_a,
            vec![
                (1200, 0),
                (1200, 1),
                (1200, 2),
                (1200, 3),
                (300, 4),
                (50, 7)
            ]
        );
        let mut got_b = Vec::new();
        for _ in 0..72 {
            let (n, _) = b.recv_from(&mut buf).expect("b receives");
            got_b.push((n, buf[0]));
        }
        assert_eq!(got_b[0], (1000, 5));
        assert_eq!(got_b[1], (1000, 6));
        assert!(got_b[2..]
            .iter()
            .enumerate()
            .all(|(i, g)| *g == (100, 8 + i as u8)));
        assert_eq!(metrics.datagrams_send_dropped.load(Ordering::Relaxed), 0);
        // Linux >= 4.18 takes UDP_SEGMENT on loopback: the runs really went out as GSO sends.
        assert!(s.gso_enabled(), "GSO was refused and turned off");
    }
}
