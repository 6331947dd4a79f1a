//! Soak (issue 13): mixed honest load on one `aula serve` with its defaults while rounds of
//! the attacks cycle through, then a verdict.
//!
//! Honest load: a room of 20 WebRTC clients (a WHIP publisher of real VP8 + Opus from
//! GStreamer, whose broadcast starts the default egress job, and 19 WHEP viewers; webrtc-rs,
//! independent of the server's str0m) and 200 collab editors (10 documents x 20, each typing
//! twice a second). Every round (100 s) starts with the attacks below, holds what they open
//! until the server closes it or the round is nearly over, then lets the deadlines and unloads
//! pass. At each round's end the server's RSS, heap in use, open file descriptors and threads
//! are sampled. At the end: those against the sample after the warm-up rounds, every honest
//! edit delivered to every other editor of its document and in the document, every viewer
//! receiving in every round, the egress job live throughout, no panic in the server's log.
//!
//! `cargo build --release -p aula -p bench && ./target/release/soak --minutes 30`
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bench::collab_client::{editor, markers, Pace, Stats as EditStats};
use bench::webrtc_client::{publisher, subscriber, Stats as RtpStats};
use bench::AulaServer;
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use rtc::media::Sample;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use webrtc::peer_connection::PeerConnection;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{GetString, ReadTxn, StateVector, Text, Transact, Update};

#[derive(Parser)]
#[command(about = "aula soak: honest load + cycling attacks; resources before and after")]
struct Args {
    /// Measured minutes, after the warm-up rounds.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Rounds before the measured ones (thread pools, arenas, caches and a retained buffer of
    /// the first 900 KB floods settle: the heap steps up ~10 MiB once, in round 3 or 4).
    #[arg(long, default_value_t = 5)]
    warmup_rounds: usize,
    /// Seconds per round: longer than `collab.idle_timeout_s` (60) + `unload_after_s` (10).
    #[arg(long, default_value_t = 100)]
    round_s: u64,
    #[arg(long, default_value_t = 10)]
    docs: usize,
    /// Editors per document.
    #[arg(long, default_value_t = 20)]
    editors: usize,
    /// Inserts per second per editor.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    #[arg(long, default_value_t = 19)]
    viewers: usize,
    #[arg(long, default_value = "target/release/aula")]
    aula: String,
    /// Where the server's log goes.
    #[arg(long, default_value = "soak-serve.log")]
    log: PathBuf,
}

/// The server process's resources at one moment.
#[derive(Clone, Copy, Debug)]
struct Resources {
    /// Anonymous resident memory (heap, stacks): what a leak grows.
    anon_kib: u64,
    /// File-backed resident memory: code and libraries paged in as new paths run; it only
    /// grows, and is not memory the server holds on its own.
    file_kib: u64,
    heap: u64,
    fds: u64,
    threads: u64,
}

fn resources(pid: u32, heap: u64) -> Result<Resources> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Resources {
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
        heap,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
        threads: field("Threads:"),
    })
}

/// Blocking HTTP (ureq) off the runtime; 4xx/5xx are answers, not errors.
#[derive(Clone)]
struct Http {
    agent: ureq::Agent,
}

struct Answer {
    status: u16,
    body: String,
    location: Option<String>,
}

impl Http {
    fn new() -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Http {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    async fn call(
        &self,
        method: &'static str,
        url: String,
        token: Option<String>,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Answer> {
        let agent = self.agent.clone();
        tokio::task::spawn_blocking(move || -> Result<Answer> {
            let auth = token.map(|t| format!("Bearer {t}"));
            let mut r = match (method, body) {
                ("POST", Some((ct, b))) => {
                    let mut req = agent.post(&url).header("Content-Type", ct);
                    if let Some(a) = &auth {
                        req = req.header("Authorization", a);
                    }
                    req.send(&b[..])?
                }
                ("DELETE", _) => {
                    let mut req = agent.delete(&url);
                    if let Some(a) = &auth {
                        req = req.header("Authorization", a);
                    }
                    req.call()?
                }
                _ => {
                    let mut req = agent.get(&url);
                    if let Some(a) = &auth {
                        req = req.header("Authorization", a);
                    }
                    req.call()?
                }
            };
            let location = r
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            Ok(Answer {
                status: r.status().as_u16(),
                body: r.body_mut().read_to_string().unwrap_or_default(),
                location,
            })
        })
        .await?
    }
}

/// A WebSocket on `path` of the server at `addr` (`host:port`), its TCP stream reachable for
/// raw writes.
async fn ws(addr: &str, path: &str) -> Result<WebSocketStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp)
        .await
        .with_context(|| format!("WebSocket {path}"))?;
    Ok(ws)
}

/// Waits (up to 10 s) for the server to close `ws` with a code `ok` accepts (1005: a close
/// without a code, 1006: closed without a close frame); `expected` says what was wanted.
async fn expect_close(
    ws: &mut WebSocketStream<TcpStream>,
    ok: impl Fn(u16) -> bool,
    expected: &str,
) -> Result<String> {
    let code = timeout(Duration::from_secs(10), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(WsMessage::Close(Some(f))) => return u16::from(f.code),
                Ok(WsMessage::Close(None)) => return 1005,
                Ok(_) => continue,
                Err(_) => return 1006,
            }
        }
        1006
    })
    .await
    .ok();
    match code {
        Some(c) if ok(c) => Ok(format!("closed {c}")),
        other => bail!("expected close {expected}, got {other:?}"),
    }
}

/// Whether the server has closed this TCP connection (reads what is pending, then EOF).
fn closed_by_peer(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tcp.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn var(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Issue 13 item 2's shape: one insert by each of `clients` synthetic client ids.
fn many_clients_update(clients: u64) -> Vec<u8> {
    let mut u = Vec::new();
    var(&mut u, clients);
    for c in 0..clients {
        var(&mut u, 1);
        var(&mut u, 1000 + c);
        var(&mut u, 0);
        u.push(0x04);
        var(&mut u, 1);
        var(&mut u, 4);
        u.extend_from_slice(b"code");
        var(&mut u, 1);
        u.push(b'x');
    }
    var(&mut u, 0);
    let mut m = vec![0, 2];
    var(&mut m, u.len() as u64);
    m.extend_from_slice(&u);
    m
}

fn sync_update(update: Vec<u8>) -> WsMessage {
    WsMessage::Binary(
        Message::Sync(SyncMessage::Update(update))
            .encode_v1()
            .into(),
    )
}

const OPUS_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=ice-ufrag:abcd\r\n\
a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
a=ssrc:1234 cname:x\r\n";

/// The honest documents of round `n`: each round the editors move to fresh ones (a new lesson
/// page), so memory measures the server, not a document growing by hundreds of items a second
/// (a Yjs document keeps every deleted item); the last round's unload 10 s after they leave.
fn doc_name(d: usize, n: usize) -> String {
    format!("notes{d}r{n}")
}

/// Tokens a round uses (each is a run of `aula token`), minted as the round starts.
struct RoundTokens {
    /// Per honest document, one token per editor.
    editors: Vec<Vec<String>>,
    /// 40 writers of the round's document 0 (each holds half a frame).
    writers: Vec<String>,
    n: usize,
    flood_room: String,
    readers: Vec<String>,
    flooder: String,
    awareness_ro: String,
    many_ids: String,
    pinger: String,
    offerer: String,
}

struct Attacker {
    addr: String,
    base: String,
    media: String,
    http: Http,
    /// 30 participants of the honest room (seats taken and left) and one identity joining many times.
    joiners: Vec<String>,
    dup: String,
    cam: String,
}

/// What a round left open, to check and drop near its end.
#[derive(Default)]
struct Held {
    raw: Vec<TcpStream>,
    sockets: Vec<WebSocketStream<TcpStream>>,
}

impl Attacker {
    /// A `/collab` WebSocket on `doc` with `token`.
    async fn collab(&self, doc: &str, token: &str) -> Result<WebSocketStream<TcpStream>> {
        ws(&self.addr, &format!("/collab/{doc}?token={token}")).await
    }

    /// Runs every attack once; returns what is held open and each attack's outcome.
    /// `whip_sessions`: the WHIP churn's count this round (more in warm-up, see `churn_for`).
    async fn round(
        &self,
        t: &RoundTokens,
        whip_sessions: usize,
    ) -> (Held, Vec<(&'static str, Result<String>)>) {
        let mut held = Held::default();
        let mut out: Vec<(&'static str, Result<String>)> = Vec::new();
        out.push(("slowloris", self.slowloris(&mut held).await));
        out.push(("half frames", self.half_frames(t, &mut held).await));
        out.push((
            "slow readers + 900 KB updates",
            self.flood(t, &mut held).await,
        ));
        out.push(("pending updates", self.pending(t).await));
        out.push(("awareness clock 2^32-1", self.awareness_clock(t).await));
        out.push(("15,000 client ids", self.many_ids(t).await));
        out.push(("collab ping flood", self.ping_flood(t).await));
        out.push(("re-offer flood", self.offer_flood(t).await));
        out.push(("seat churn", self.seats().await));
        out.push(("WHIP churn", self.whip_churn(whip_sessions).await));
        out.push(("garbage UDP", self.udp().await));
        out.push(("bad tokens and bodies", self.bad_requests().await));
        (held, out)
    }

    /// 50 requests with 8 KB of unfinished header each (the per-address cap is 64).
    async fn slowloris(&self, held: &mut Held) -> Result<String> {
        for _ in 0..50 {
            let mut c = TcpStream::connect(&self.addr).await?;
            let head = format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fat: {}",
                "a".repeat(8000)
            );
            c.write_all(head.as_bytes()).await?;
            held.raw.push(c);
        }
        Ok("50 held".into())
    }

    /// 40 writers of an honest document each send half of a 1,000,000-byte frame.
    async fn half_frames(&self, t: &RoundTokens, held: &mut Held) -> Result<String> {
        for tok in &t.writers {
            let mut c = self.collab(&doc_name(0, t.n), tok).await?;
            let mut frame = vec![0x82, 0xff, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40, 1, 2, 3, 4];
            frame.resize(frame.len() + 500_000, 0);
            c.get_mut().write_all(&frame).await?;
            held.sockets.push(c);
        }
        Ok("40 held".into())
    }

    /// Three readers that never read while a writer sends twelve 900 KB updates.
    async fn flood(&self, t: &RoundTokens, held: &mut Held) -> Result<String> {
        for tok in &t.readers {
            held.sockets.push(self.collab(&t.flood_room, tok).await?);
        }
        let mut w = self.collab(&t.flood_room, &t.flooder).await?;
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        for i in 0..12u8 {
            let before = doc.transact().state_vector();
            text.insert(
                &mut doc.transact_mut(),
                0,
                &char::from(b'0' + i % 10).to_string().repeat(900_000),
            );
            let u = doc.transact().encode_state_as_update_v1(&before);
            w.send(sync_update(u)).await?;
            sleep(Duration::from_millis(50)).await;
        }
        w.close(None).await.ok();
        Ok("12 sent".into())
    }

    /// Updates whose origin the server never got, until the document's pending cap.
    async fn pending(&self, t: &RoundTokens) -> Result<String> {
        let mut w = self.collab(&t.flood_room, &t.flooder).await?;
        let mut sent = 0;
        for _ in 0..30 {
            let d = yrs::Doc::new();
            let text = d.get_or_insert_text("t");
            text.insert(&mut d.transact_mut(), 0, "a");
            let sv = d.transact().state_vector();
            text.insert(&mut d.transact_mut(), 1, &"b".repeat(60_000));
            let u = d.transact().encode_state_as_update_v1(&sv);
            if w.send(sync_update(u)).await.is_err() {
                break;
            }
            sent += 1;
            sleep(Duration::from_millis(10)).await;
        }
        w.close(None).await.ok();
        Ok(format!("{sent} sent"))
    }

    /// A read-only client's awareness clock of 2^32-1 (item 1): closed as malformed (4400).
    async fn awareness_clock(&self, t: &RoundTokens) -> Result<String> {
        let mut c = self.collab(&doc_name(2, t.n), &t.awareness_ro).await?;
        let msg = vec![1, 10, 1, 7, 0xff, 0xff, 0xff, 0xff, 0x0f, 2, b'{', b'}'];
        c.send(WsMessage::Binary(msg.into())).await?;
        expect_close(&mut c, |c| c == 4400, "4400").await
    }

    /// One update from 15,000 synthetic client ids into an honest document (item 2).
    async fn many_ids(&self, t: &RoundTokens) -> Result<String> {
        let mut c = self.collab(&doc_name(3, t.n), &t.many_ids).await?;
        c.send(WsMessage::Binary(many_clients_update(15_000).into()))
            .await?;
        expect_close(&mut c, |c| c >= 4000, "4xxx").await
    }

    /// 3,000 WebSocket pings on a collab socket (item 9): closed 4429.
    async fn ping_flood(&self, t: &RoundTokens) -> Result<String> {
        let mut c = self.collab(&doc_name(4, t.n), &t.pinger).await?;
        for _ in 0..3000 {
            if c.feed(WsMessage::Ping(Bytes::new())).await.is_err() {
                break;
            }
        }
        let _ = c.flush().await;
        expect_close(&mut c, |c| c == 4429, "4429").await
    }

    /// 60 re-offers on the honest room's signaling socket (item 9): refused, then closed 4400.
    async fn offer_flood(&self, t: &RoundTokens) -> Result<String> {
        let mut c = ws(&self.addr, &format!("/rtc/class?token={}", t.offerer)).await?;
        joined(&mut c).await?;
        let offer = serde_json::json!({"type": "offer", "sdp": OPUS_OFFER}).to_string();
        for _ in 0..60 {
            if c.send(WsMessage::Text(offer.clone().into())).await.is_err() {
                break;
            }
        }
        expect_close(&mut c, |c| c == 4400, "4400").await
    }

    /// 30 participants take seats in the honest room and leave; one identity joins 10 times
    /// (each join replaces the one before, item 5); malformed JSON is refused.
    async fn seats(&self) -> Result<String> {
        let mut open = Vec::new();
        for tok in &self.joiners {
            let mut c = ws(&self.addr, &format!("/rtc/class?token={tok}")).await?;
            joined(&mut c).await?;
            open.push(c);
        }
        for _ in 0..10 {
            let mut c = ws(&self.addr, &format!("/rtc/class?token={}", self.dup)).await?;
            joined(&mut c).await?;
            open.push(c);
        }
        if let Some(c) = open.last_mut() {
            for bad in ["{not json", "{\"type\":\"nonsense\"}", "[]", "\u{1b}[2J"] {
                c.send(WsMessage::Text(bad.into())).await?;
            }
        }
        sleep(Duration::from_secs(1)).await;
        for mut c in open {
            let _ = c.close(None).await;
        }
        Ok("40 joined and left".into())
    }

    /// `n` WHIP sessions of one identity in another room (each replaces the one before), then
    /// the last ended by its bearer.
    async fn whip_churn(&self, n: usize) -> Result<String> {
        let mut last = None;
        for _ in 0..n {
            let a = self
                .http
                .call(
                    "POST",
                    format!("{}/whip/seats", self.base),
                    Some(self.cam.clone()),
                    Some(("application/sdp", OPUS_OFFER.as_bytes().to_vec())),
                )
                .await?;
            if a.status != 201 {
                bail!("WHIP POST {}: {}", a.status, a.body);
            }
            last = a.location;
        }
        let loc = last.ok_or_else(|| anyhow!("no Location"))?;
        let url = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        let d = self
            .http
            .call("DELETE", url, Some(self.cam.clone()), None)
            .await?;
        if d.status != 200 {
            bail!("WHIP DELETE {}", d.status);
        }
        Ok(format!("{n} sessions, last deleted"))
    }

    /// 2,000 datagrams at the media port: random bytes, STUN-shaped and RTP-shaped.
    async fn udp(&self) -> Result<String> {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 1400];
        for i in 0..2000usize {
            let len = 1 + (i * 37) % buf.len();
            for b in buf.iter_mut().take(len) {
                // xorshift: cheap, deterministic noise
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            match i % 3 {
                0 if len >= 20 => {
                    // STUN binding request header with the magic cookie, random rest.
                    buf[..8].copy_from_slice(&[0, 1, 0, (len - 20) as u8, 0x21, 0x12, 0xa4, 0x42]);
                }
                1 if len >= 12 => buf[0] = 0x80, // RTP version 2
                _ => {}
            }
            s.send_to(&buf[..len], &self.media).await?;
            if i % 100 == 99 {
                sleep(Duration::from_millis(5)).await;
            }
        }
        Ok("2000 sent".into())
    }

    /// Forged tokens (401), an oversized WHIP body (413), a log-forging path (404).
    async fn bad_requests(&self) -> Result<String> {
        let forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJldmUifQ.c2lnbmF0dXJl".to_string();
        for _ in 0..10 {
            let a = self
                .http
                .call(
                    "GET",
                    format!("{}/api/rooms/class", self.base),
                    Some(forged.clone()),
                    None,
                )
                .await?;
            if a.status != 401 {
                bail!("forged token on /api/rooms: {}", a.status);
            }
            let w = self
                .http
                .call(
                    "POST",
                    format!("{}/whip/class", self.base),
                    Some(forged.clone()),
                    Some(("application/sdp", OPUS_OFFER.as_bytes().to_vec())),
                )
                .await?;
            if w.status != 401 {
                bail!("forged token on WHIP: {}", w.status);
            }
        }
        let big = self
            .http
            .call(
                "POST",
                format!("{}/whip/seats", self.base),
                Some(self.cam.clone()),
                Some(("application/sdp", vec![b'v'; 100_000])),
            )
            .await?;
        if big.status != 413 {
            bail!("100 KB WHIP body: {}", big.status);
        }
        let log = self
            .http
            .call(
                "GET",
                format!("{}/assets/x%0AINFO%20forged%1B%5B2J", self.base),
                None,
                None,
            )
            .await?;
        if log.status != 404 {
            bail!("forged asset path: {}", log.status);
        }
        Ok("refused".into())
    }
}

/// Waits for the room socket's `joined` message.
async fn joined(c: &mut WebSocketStream<TcpStream>) -> Result<()> {
    timeout(Duration::from_secs(10), async {
        while let Some(m) = c.next().await {
            if let WsMessage::Text(t) = m? {
                if t.contains("\"type\":\"joined\"") {
                    return Ok(());
                }
            }
        }
        bail!("closed before joined")
    })
    .await
    .context("no joined within 10 s")?
}

/// The publisher's media: GStreamer test video encoded to VP8 (640x360, 30 fps, ~1 Mbit/s,
/// a keyframe every 2 s) and Opus, as encoded frames.
fn media_source(tx: mpsc::Sender<(bool, Bytes)>) -> Result<gst::Pipeline> {
    gst::init()?;
    let desc = "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 \
        ! vp8enc deadline=1 cpu-used=8 target-bitrate=1000000 keyframe-max-dist=60 threads=1 \
        ! appsink name=v sync=false max-buffers=60 drop=true \
        audiotestsrc is-live=true wave=ticks ! audio/x-raw,rate=48000,channels=2 ! opusenc frame-size=20 \
        ! appsink name=a sync=false max-buffers=100 drop=true";
    let pipeline = gst::parse::launch(desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    for (name, video) in [("v", true), ("a", false)] {
        let sink = pipeline
            .by_name(name)
            .ok_or_else(|| anyhow!("no {name}"))?
            .downcast::<gst_app::AppSink>()
            .map_err(|_| anyhow!("{name} is not an appsink"))?;
        let tx = tx.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(b) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                        let _ = tx.try_send((video, Bytes::copy_from_slice(&b)));
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    pipeline.set_state(gst::State::Playing)?;
    Ok(pipeline)
}

/// The markers in a document's text `code`, as a fresh reader syncs it: how many of each of the
/// `editors` senders numbered from `first`.
async fn document_markers(
    addr: &str,
    doc: &str,
    token: &str,
    first: usize,
    editors: usize,
) -> Result<Vec<u64>> {
    let mut c = ws(addr, &format!("/collab/{doc}?token={token}")).await?;
    let step1 = Message::Sync(SyncMessage::SyncStep1(StateVector::default())).encode_v1();
    c.send(WsMessage::Binary(step1.into())).await?;
    let update = timeout(Duration::from_secs(20), async {
        while let Some(m) = c.next().await {
            if let WsMessage::Binary(b) = m? {
                if let Ok(Message::Sync(SyncMessage::SyncStep2(u))) = Message::decode_v1(&b) {
                    return Ok(u);
                }
            }
        }
        bail!("closed before sync step 2")
    })
    .await
    .context("no sync step 2 within 20 s")??;
    let _ = c.close(None).await;
    let d = yrs::Doc::new();
    let text = d.get_or_insert_text("code");
    d.transact_mut()
        .apply_update(Update::decode_v1(&update)?)
        .map_err(|e| anyhow!("applying the document: {e}"))?;
    let s = text.get_string(&d.transact());
    let mut counts = vec![0u64; editors];
    markers(s.as_bytes(), usize::MAX, |who, _| {
        if let Some(n) = who.checked_sub(first).and_then(|i| counts.get_mut(i)) {
            *n += 1;
        }
    });
    Ok(counts)
}

/// WHIP sessions the churn attack opens in round `n`: 10, and in the warm-up rounds enough
/// more that the server's bounded list of finished egress jobs (each session's job ends when
/// the next replaces it) is full before the first measured round. Filling a bounded list is
/// warm-up, not growth; measured from half full, the soak counted ~0.5 MiB of it as growth.
fn churn_for(n: usize, warmup_rounds: usize) -> usize {
    const PER_ROUND: usize = 10;
    if n >= warmup_rounds || warmup_rounds == 0 {
        return PER_ROUND;
    }
    PER_ROUND.max(egress::FINISHED_JOBS_KEPT.div_ceil(warmup_rounds) + PER_ROUND)
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

/// Each field's median over `rs` (an odd count).
fn median(rs: &[Resources]) -> Resources {
    let mid = |f: fn(&Resources) -> u64| {
        let mut v: Vec<u64> = rs.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    Resources {
        anon_kib: mid(|r| r.anon_kib),
        file_kib: mid(|r| r.file_kib),
        heap: mid(|r| r.heap),
        fds: mid(|r| r.fds),
        threads: mid(|r| r.threads),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    bench::clock();
    let rounds = args.warmup_rounds + ((args.minutes * 60.0) / args.round_s as f64).ceil() as usize;
    println!(
        "aula soak: {} rounds of {} s ({} warm-up); 1 WHIP publisher + {} WHEP viewers with the default egress job, {} documents x {} editors at {}/s; server log in {}",
        rounds, args.round_s, args.warmup_rounds, args.viewers, args.docs, args.editors, args.rate, args.log.display()
    );
    let server = AulaServer::start_logged(&args.aula, &[], Some(&args.log))?;
    let addr = server.base.trim_start_matches("http://").to_string();
    let http = Http::new();
    let admin = server.token("*", "ops", &["--admin"])?;

    let tok = |room: &str, who: &str, flags: &[&str]| server.token(room, who, flags);
    let mint = |n: usize| -> Result<RoundTokens> {
        let flood_room = format!("flood{n}");
        Ok(RoundTokens {
            editors: (0..args.docs)
                .map(|d| {
                    (0..args.editors)
                        .map(|e| tok(&doc_name(d, n), &format!("e{e}"), &["--publish-data"]))
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<_>>()?,
            writers: (0..40)
                .map(|i| tok(&doc_name(0, n), &format!("w{i}"), &["--publish-data"]))
                .collect::<Result<_>>()?,
            readers: (0..3)
                .map(|i| tok(&flood_room, &format!("r{i}"), &[]))
                .collect::<Result<_>>()?,
            flooder: tok(&flood_room, "flooder", &["--publish-data"])?,
            awareness_ro: tok(&doc_name(2, n), "ro", &[])?,
            many_ids: tok(&doc_name(3, n), "ids", &["--publish-data"])?,
            pinger: tok(&doc_name(4, n), "pinger", &[])?,
            offerer: tok("class", &format!("offerer{n}"), &[])?,
            n,
            flood_room,
        })
    };
    let attacker = Attacker {
        addr: addr.clone(),
        base: server.base.clone(),
        media: server.media.clone(),
        http: http.clone(),
        joiners: (0..30)
            .map(|i| tok("class", &format!("p{i}"), &[]))
            .collect::<Result<_>>()?,
        dup: tok("class", "dup", &[])?,
        cam: tok("seats", "cam", &["--publish"])?,
    };

    // The publisher: WHIP into `class`, which starts the default egress job.
    let (pub_pc, vtrack, atrack) = publisher(
        format!("{}/whip/class", server.base),
        tok("class", "tutor", &["--publish"])?,
    )
    .await?;
    let (media_tx, mut media_rx) = mpsc::channel::<(bool, Bytes)>(256);
    let pipeline = media_source(media_tx)?;
    let media = tokio::spawn(async move {
        while let Some((video, data)) = media_rx.recv().await {
            let (track, ssrc, pt, ms) = if video {
                (&vtrack, 0x1111, 96, 33)
            } else {
                (&atrack, 0x2222, 111, 20)
            };
            let s = Sample {
                data,
                duration: Duration::from_millis(ms),
                ..Sample::new(Instant::now())
            };
            let _ = track.sample_writer(ssrc, pt).write_sample(&s).await;
        }
    });

    // Viewers.
    let mut viewers = Vec::new();
    for i in 0..args.viewers {
        let stats = Arc::new(RtpStats::default());
        stats.measuring.store(true, Ordering::Relaxed);
        let (pc, _) = subscriber(
            format!("{}/whep/class", server.base),
            tok("class", &format!("viewer{i}"), &[])?,
            stats.clone(),
        )
        .await
        .with_context(|| format!("viewer {i}"))?;
        viewers.push((pc, stats));
    }

    let ws_base = server.base.replace("http://", "ws://");
    let job_of = |jobs: &serde_json::Value| -> Option<serde_json::Value> {
        jobs.as_array()?
            .iter()
            .find(|j| j["room"] == "class" && j["source"] != "test")
            .cloned()
    };
    let t0 = Instant::now();
    let mut samples: Vec<(usize, Resources)> = Vec::new();
    let mut attack_failures = Vec::new();
    let mut viewer_stalls = 0u64;
    let mut job_not_live = Vec::new();
    let mut last_video: Vec<u64> = vec![0; viewers.len()];
    let mut peak_rss = 0u64;
    let (mut lost, mut errors, mut wrong_in_doc, mut sent_total) = (0i64, 0u64, 0usize, 0u64);
    println!(
        "{:>5} {:>6} {:>8} {:>8} {:>8} {:>5} {:>7}  {:>15}  {:>11}  {:>13}  {:>24}  attacks",
        "round",
        "t_s",
        "anon_MiB",
        "file_MiB",
        "heap_MiB",
        "fds",
        "threads",
        "collab p50/p99",
        "edits lost",
        "viewer pkt/s",
        "egress"
    );
    for n in 0..rounds {
        let start = Instant::now();
        let t = tokio::task::block_in_place(|| mint(n))?;
        // This round's editors: all connected before anyone types, so every insert is a
        // broadcast to count.
        let stop = Arc::new(AtomicBool::new(false));
        let (go_tx, go) = watch::channel(false);
        let pace = Pace {
            rate: args.rate,
            go,
            stop: stop.clone(),
            linger: Duration::from_secs(5),
        };
        let mut doc_stats = Vec::new();
        let mut editors = Vec::new();
        for (d, tokens) in t.editors.iter().enumerate() {
            let stats = Arc::new(EditStats::default());
            stats.measuring.store(true, Ordering::Relaxed);
            for (e, token) in tokens.iter().enumerate() {
                let url = format!("{ws_base}/collab/{}?token={token}", doc_name(d, n));
                editors.push(tokio::spawn(editor(
                    url,
                    d * args.editors + e,
                    pace.clone(),
                    stats.clone(),
                )));
                // A class opens its page over a second or two, not in one instant (200 at once
                // from one address would meet `http.max_pending_per_ip`, as designed).
                sleep(Duration::from_millis(10)).await;
            }
            doc_stats.push(stats);
        }
        sleep(Duration::from_secs(2)).await;
        go_tx.send(true)?;

        let (held, outcomes) = attacker.round(&t, churn_for(n, args.warmup_rounds)).await;
        // Hold until the deadlines have done their work or the round is nearly over.
        let hold_until = Duration::from_secs(args.round_s.saturating_sub(25));
        let mut peak = 0;
        while start.elapsed() < hold_until {
            sleep(Duration::from_secs(5)).await;
            let x = resources(server.pid(), 0)?;
            peak = peak.max(x.anon_kib + x.file_kib);
        }
        peak_rss = peak_rss.max(peak);
        let raw_closed = held.raw.iter().filter(|c| closed_by_peer(c)).count();
        let ws_closed = held
            .sockets
            .iter()
            .filter(|c| closed_by_peer(c.get_ref()))
            .count();
        let held_total = held.raw.len() + held.sockets.len();
        drop(held);

        // The editors stop; what is in flight still arrives (they read for 5 s more).
        let stop_at = Duration::from_secs(args.round_s.saturating_sub(12));
        while start.elapsed() < stop_at {
            sleep(Duration::from_millis(500)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut failed_editors = Vec::new();
        for e in editors {
            if let Ok(Err(e)) = e.await {
                failed_editors.push(e.root_cause().to_string());
            }
        }
        if let Some(first) = failed_editors.first() {
            println!(
                "      {} editors failed, e.g.: {first}",
                failed_editors.len()
            );
            errors += failed_editors.len() as u64;
        }
        let mut round_lost = 0i64;
        let mut lat = Vec::new();
        for (d, s) in doc_stats.iter().enumerate() {
            let sent = s.sent.load(Ordering::Relaxed);
            sent_total += sent;
            let expected = sent * (args.editors as u64 - 1);
            round_lost += expected as i64 - s.received.load(Ordering::Relaxed) as i64;
            errors += s.errors.load(Ordering::Relaxed);
            if let Ok(mut l) = s.latencies_us.lock() {
                lat.append(&mut l);
            }
            // And the document holds every insert, as a newcomer syncs it.
            let reader = tok(&doc_name(d, n), "checker", &[])?;
            match document_markers(
                &addr,
                &doc_name(d, n),
                &reader,
                d * args.editors,
                args.editors,
            )
            .await
            {
                Ok(counts) => {
                    let in_doc: u64 = counts.iter().sum();
                    if in_doc != sent {
                        wrong_in_doc += 1;
                        println!(
                            "      {}: {in_doc} inserts in the document, {sent} sent",
                            doc_name(d, n)
                        );
                    }
                }
                Err(e) => {
                    wrong_in_doc += 1;
                    println!("      {}: {e:#}", doc_name(d, n));
                }
            }
        }
        lost += round_lost;
        let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));

        // The quiet level: the least of five readings 2 s apart over the round's last 10 s (a
        // single reading lands on a trim, a GOP's buffers or a document unload at random:
        // 111-125 MiB in one run at the same heap).
        while start.elapsed() < Duration::from_secs(args.round_s.saturating_sub(10)) {
            sleep(Duration::from_millis(500)).await;
        }
        let mut r: Option<Resources> = None;
        for _ in 0..5 {
            let heap = server.metric("aula_heap_in_use_bytes").unwrap_or(0);
            let x = resources(server.pid(), heap)?;
            r = Some(match r {
                None => x,
                Some(m) => Resources {
                    anon_kib: m.anon_kib.min(x.anon_kib),
                    file_kib: m.file_kib.min(x.file_kib),
                    heap: m.heap.min(x.heap),
                    fds: m.fds.min(x.fds),
                    threads: m.threads.min(x.threads),
                },
            });
            sleep(Duration::from_secs(2)).await;
        }
        let r = r.ok_or_else(|| anyhow!("no reading"))?;
        samples.push((n, r));

        let secs = start.elapsed().as_secs_f64();
        let mut min_rate = f64::MAX;
        for (i, (_, s)) in viewers.iter().enumerate() {
            let v = s.video_packets.load(Ordering::Relaxed);
            let rate = (v - last_video[i]) as f64 / secs;
            if v == last_video[i] {
                viewer_stalls += 1;
            }
            last_video[i] = v;
            min_rate = min_rate.min(rate);
        }
        let jobs = http
            .call(
                "GET",
                format!("{}/api/egress", server.base),
                Some(admin.clone()),
                None,
            )
            .await
            .ok()
            .and_then(|a| serde_json::from_str::<serde_json::Value>(&a.body).ok())
            .unwrap_or_default();
        let egress = match job_of(&jobs) {
            Some(j) => {
                if j["state"] != "live" {
                    job_not_live.push(format!("round {n}: {}", j["state"]));
                }
                format!(
                    "{} speed {:.2} rungs {}",
                    j["state"].as_str().unwrap_or("?"),
                    j["encoder_speed"].as_f64().unwrap_or(0.0),
                    j["rungs"].as_array().map(|a| a.len()).unwrap_or(0)
                        - j["shed_rungs"].as_array().map(|a| a.len()).unwrap_or(0)
                )
            }
            None => {
                job_not_live.push(format!("round {n}: no job"));
                "no job".into()
            }
        };
        let failed: Vec<String> = outcomes
            .iter()
            .filter_map(|(name, o)| o.as_ref().err().map(|e| format!("{name}: {e:#}")))
            .collect();
        println!(
            "{:>5} {:>6.0} {:>8.1} {:>8.1} {:>8.1} {:>5} {:>7}  {:>6.1}/{:>6.1} ms  {:>11}  {:>13.0}  {:>24}  {}/{} as expected; server closed {}/{} held",
            n,
            t0.elapsed().as_secs_f64(),
            mib(r.anon_kib),
            mib(r.file_kib),
            r.heap as f64 / 1048576.0,
            r.fds,
            r.threads,
            p50,
            p99,
            round_lost,
            min_rate,
            egress,
            outcomes.len() - failed.len(),
            outcomes.len(),
            raw_closed + ws_closed,
            held_total
        );
        for f in &failed {
            println!("      unexpected: {f}");
        }
        attack_failures.extend(failed.into_iter().map(|f| format!("round {n}: {f}")));
    }

    let log = std::fs::read_to_string(&args.log).unwrap_or_default();
    let panics = log.lines().filter(|l| l.contains("panicked")).count();
    let mut loss = 0u64;
    let mut video = 0u64;
    for (_, s) in &viewers {
        loss += s.lost.load(Ordering::Relaxed);
        video += s.video_packets.load(Ordering::Relaxed);
    }
    drop(pipeline);
    media.abort();
    for (pc, _) in viewers {
        let _ = pc.close().await;
    }
    let _ = pub_pc.close().await;

    // "After warm-up" and "at the end": the medians of the first and of the last three
    // measured rounds' readings. One round's reading still swings by ~20 MiB of anonymous memory
    // with the egress job's buffers (58-81 MiB at a steady heap in one run).
    let measured: Vec<Resources> = samples
        .iter()
        .filter(|(n, _)| *n >= args.warmup_rounds)
        .map(|s| s.1)
        .collect();
    if measured.len() < 3 {
        bail!("fewer than 3 measured rounds: run longer (--minutes)");
    }
    let base = median(&measured[..3]);
    let end = median(&measured[measured.len() - 3..]);
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    println!(
        "\nafter warm-up: RSS {:.1} MiB ({:.1} anonymous + {:.1} file-backed), heap {:.1} MiB, {} fds, {} threads; at the end: RSS {:.1} MiB ({:.1} anonymous, {:+.1}%, + {:.1} file-backed), heap {:.1} MiB, {} fds, {} threads; peak RSS {:.1} MiB",
        mib(base.anon_kib + base.file_kib),
        mib(base.anon_kib),
        mib(base.file_kib),
        base.heap as f64 / 1048576.0,
        base.fds,
        base.threads,
        mib(end.anon_kib + end.file_kib),
        mib(end.anon_kib),
        (ratio(end.anon_kib, base.anon_kib) - 1.0) * 100.0,
        mib(end.file_kib),
        end.heap as f64 / 1048576.0,
        end.fds,
        end.threads,
        mib(peak_rss)
    );
    println!(
        "collab: {sent_total} inserts, {} deliveries missing, {wrong_in_doc} documents missing inserts, {errors} editors dropped; viewers: {video} video packets, {loss} lost ({:.3}%), {viewer_stalls} viewer-rounds with nothing received; egress: {}; {} panics in the log; {} unexpected attack outcomes",
        lost,
        loss as f64 * 100.0 / (video + loss).max(1) as f64,
        if job_not_live.is_empty() { "live in every round".to_string() } else { job_not_live.join(", ") },
        panics,
        attack_failures.len()
    );
    let mut verdict = Vec::new();
    // "Within a few percent": 5% of anonymous RSS (file-backed pages are code paged in, not
    // memory the server holds), and file descriptors and threads within 5% (or 2).
    let near = |a: u64, b: u64| a <= b + (b / 20).max(2);
    if ratio(end.anon_kib, base.anon_kib) > 1.05 {
        verdict.push("anonymous RSS grew more than 5%");
    }
    if !near(end.fds, base.fds) {
        verdict.push("file descriptors grew");
    }
    if !near(end.threads, base.threads) {
        verdict.push("threads grew");
    }
    if lost != 0 || wrong_in_doc != 0 || errors != 0 {
        verdict.push("honest edits lost or editors dropped");
    }
    if viewer_stalls != 0 {
        verdict.push("a viewer received nothing for a round");
    }
    if !job_not_live.is_empty() {
        verdict.push("the egress job was not live throughout");
    }
    if panics != 0 {
        verdict.push("panics in the log");
    }
    if !attack_failures.is_empty() {
        verdict.push("attacks not refused as expected");
    }
    if verdict.is_empty() {
        println!("verdict: pass");
        Ok(())
    } else {
        // An error return (not `process::exit`) so the server is dropped, i.e. stopped.
        bail!("verdict: FAIL ({})", verdict.join("; "));
    }
}
