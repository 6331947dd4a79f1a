//! Socket plumbing the standard library lacks: waiting with sub-millisecond precision
//! (`ppoll`), non-blocking reads, and batched sends (`sendmmsg`): one syscall for a whole
//! fan-out burst instead of one per subscriber packet.
//!
//! UDP GSO is not used: it coalesces segments to one destination, and fan-out sends each
//! packet to a different subscriber.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::core::Datagram;
use crate::metrics::SfuMetrics;

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

/// Waits until the socket is readable or `timeout` passes. Returns whether it is readable.
pub fn wait_readable(socket: &UdpSocket, timeout: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(60) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    let n = unsafe { libc::ppoll(&mut fds, 1, &ts, std::ptr::null()) };
    n > 0 && (fds.revents & libc::POLLIN) != 0
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

/// Reusable buffers for `sendmmsg`; nothing is allocated per packet once warmed up.
pub struct Sender {
    pending: Vec<Datagram>,
    addrs: Vec<SockAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Sender {
    pub fn new() -> Sender {
        Sender {
            pending: Vec::with_capacity(BATCH),
            addrs: Vec::with_capacity(BATCH),
            iovs: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
        }
    }

    pub fn flush(
        &mut self,
        socket: &UdpSocket,
        datagrams: std::vec::Drain<'_, Datagram>,
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

    fn send_batch(&mut self, socket: &UdpSocket, batch: &[Datagram], metrics: &SfuMetrics) {
        self.addrs.clear();
        self.iovs.clear();
        self.hdrs.clear();
        for d in batch {
            self.addrs.push(SockAddr::from(d.destination));
            self.iovs.push(libc::iovec {
                iov_base: d.contents.as_ptr() as *mut libc::c_void,
                iov_len: d.contents.len(),
            });
        }
        for i in 0..batch.len() {
            // SAFETY: zeroed msghdr is a valid empty header; fields are filled below.
            let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            h.msg_hdr.msg_name = self.addrs[i].as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = self.addrs[i].len();
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(h);
        }
        let mut sent = 0usize;
        while sent < self.hdrs.len() {
            // SAFETY: headers point into `addrs`/`iovs`/`batch`, all alive for this call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.hdrs[sent..].as_mut_ptr(),
                    (self.hdrs.len() - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    // Socket buffer full: drop the rest, as a congested router would; NACK and
                    // the estimator recover.
                    metrics
                        .datagrams_bad
                        .fetch_add((self.hdrs.len() - sent) as u64, Ordering::Relaxed);
                    break;
                }
                // Per-destination errors (unreachable peer): skip that datagram.
                sent += 1;
                continue;
            }
            sent += n as usize;
        }
    }
}
