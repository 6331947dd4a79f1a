//! The HTTP accept loop: hyper's HTTP/1.1 with upgrades (WebSockets) behind caps that keep a
//! flood of idle or half-sent connections from holding the server: a deadline for each request
//! head (and so for an idle keep-alive connection), a cap on open connections, and a cap per
//! client address on connections that have not yet sent a complete request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt as _;
use tracing::{debug, warn};

/// `http.*` limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A request head (or, between requests, the next one) must arrive within this.
    pub header_timeout: Duration,
    /// Open connections at once (WebSockets included); more are closed at accept.
    pub max_connections: usize,
    /// Connections from one address that have not sent a complete request yet.
    pub max_pending_per_ip: usize,
}

/// Connections refused by a cap, for `/metrics`.
#[derive(Default)]
pub struct Refusals {
    pub over_total: AtomicU64,
    pub over_pending: AtomicU64,
}

impl Refusals {
    pub fn render(&self, out: &mut String) {
        metrics_text::Exposition::new(out).family(
            "aula_http_refused_total",
            metrics_text::Kind::Counter,
            |f| {
                f.sample(
                    &[("cap", "max_connections")],
                    self.over_total.load(Ordering::Relaxed),
                );
                f.sample(
                    &[("cap", "max_pending_per_ip")],
                    self.over_pending.load(Ordering::Relaxed),
                );
            },
        );
    }
}

/// One address's count of connections without a first request; the slot goes with the first
/// request or the connection, whichever comes first.
struct PendingSlot {
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PendingSlot {
    fn take(table: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, cap: usize) -> Option<Self> {
        let mut t = table.lock().ok()?;
        let n = t.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.lock() {
            if let Some(n) = t.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    t.remove(&self.ip);
                }
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` fires; open connections are then asked to close
/// after their current request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    refusals: Arc<Refusals>,
    tls: Option<crate::tls::Tls>,
    media: Option<sfu::server::SfuHandle>,
    stop: impl std::future::Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let pending = Arc::new(Mutex::new(HashMap::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refusals.over_total.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "connection refused: http.max_connections reached");
            continue;
        };
        let Some(slot) = PendingSlot::take(&pending, peer.ip(), limits.max_pending_per_ip) else {
            refusals.over_pending.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "connection refused: too many unfinished requests from this address");
            continue;
        };
        // Small messages (collab updates, signaling, LL-HLS playlist answers) go out as
        // written: the writers batch on their own, and Nagle + delayed ACK would hold them.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let stop_rx = stop_rx.clone();
        let header_timeout = limits.header_timeout;
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        let media = media.clone();
        tokio::spawn(async move {
            if let Some(sfu) = media {
                match sniff(&tcp, header_timeout).await {
                    Sniffed::Ice => {
                        // The media thread owns it from here (its own caps and deadlines).
                        match tcp.into_std() {
                            Ok(s) => {
                                if let Err(e) = sfu.adopt_tcp(s, peer) {
                                    warn!(%peer, error = %e, "ICE-TCP connection not handed over");
                                }
                            }
                            Err(e) => debug!(%peer, error = %e, "ICE-TCP connection lost"),
                        }
                        return;
                    }
                    Sniffed::Gone => return,
                    Sniffed::Other => {}
                }
            }
            let slot = Mutex::new(Some(slot));
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                if let Ok(mut s) = slot.lock() {
                    s.take();
                }
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let io = Counted {
                tcp,
                _permit: permit,
            };
            match acceptor {
                None => serve_io(io, svc, header_timeout, stop_rx, peer).await,
                Some(a) => {
                    // The handshake is part of the request head's deadline.
                    match tokio::time::timeout(header_timeout, a.accept(io)).await {
                        Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                            serve_h2(tls, svc, header_timeout, stop_rx, peer).await
                        }
                        Ok(Ok(tls)) => serve_io(tls, svc, header_timeout, stop_rx, peer).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake not finished within the deadline"),
                    }
                }
            }
        });
    }
    let _ = stop_tx.send(true);
}

enum Sniffed {
    /// RFC 4571 framing of a STUN message: ICE-TCP for the media thread.
    Ice,
    /// Anything else (a TLS ClientHello, an HTTP request line): served here.
    Other,
    Gone,
}

/// Looks at a connection's first bytes without reading them (`media.tcp_on_http`). ICE-TCP
/// opens with a 2-byte length and a STUN header whose first byte is 0 or 1 and whose magic
/// cookie follows (bytes 6-9 of the stream): a length under 256 puts a 0 first, which neither TLS (0x16) nor an
/// HTTP method (a letter) starts with.
async fn sniff(tcp: &tokio::net::TcpStream, deadline: Duration) -> Sniffed {
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    let mut buf = [0u8; 10];
    let start = tokio::time::Instant::now();
    loop {
        let n = match tokio::time::timeout_at(start + deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Sniffed::Gone,
            Ok(Ok(n)) => n,
        };
        if buf[0] != 0 {
            return Sniffed::Other;
        }
        if n >= buf.len() {
            return if buf[6..10] == COOKIE {
                Sniffed::Ice
            } else {
                Sniffed::Other
            };
        }
        // A few bytes so far: peek returns at once while any are queued, so wait a little.
        if start.elapsed() > deadline {
            return Sniffed::Gone;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One HTTP/1.1 connection (upgrades allowed) on `io`, plain or TLS.
async fn serve_io<I, S>(
    io: I,
    svc: S,
    header_timeout: Duration,
    mut stop_rx: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = axum::response::Response>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop_rx.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = r {
        debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// One HTTP/2 connection (TLS with ALPN `h2`): WebSockets over it by extended CONNECT (RFC
/// 8441). A peer that stops answering pings for `header_timeout` is dropped; streams per
/// connection and header sizes are capped.
async fn serve_h2<I, S>(
    io: I,
    svc: S,
    header_timeout: Duration,
    mut stop_rx: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = axum::response::Response>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_BYTES)
        .enable_connect_protocol()
        .serve_connection(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop_rx.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = r {
        debug!(%peer, error = %e, "HTTP/2 connection ended with an error");
    }
}

/// Streams one HTTP/2 connection may have open: a page with its room socket, document socket,
/// LL-HLS blocking reloads and parts stays far below it.
const H2_MAX_STREAMS: u32 = 256;
/// Largest request head over HTTP/2 (HTTP/1.1's is hyper's 400 KiB buffer): tokens are ~1 KiB.
const H2_MAX_HEADER_BYTES: u32 = 64 * 1024;

/// A connection holding its place under `max_connections` for as long as its socket lives: an
/// upgraded WebSocket takes the socket along, and so the place.
struct Counted {
    tcp: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
