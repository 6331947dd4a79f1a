//! A y-websocket editor: a Yjs text insert carrying its id and send time at a steady rate, and
//! a count of the other editors' inserts it receives (with their latency).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::encoder::Encode;
use yrs::{GetString, ReadTxn, Text, Transact};

use crate::micros;

/// What a group of editors sent and received (counted while `measuring`).
#[derive(Default)]
pub struct Stats {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub latencies_us: Mutex<Vec<u32>>,
    pub measuring: AtomicBool,
    /// Editors whose connection failed or was closed by the server before `stop`.
    pub errors: AtomicU64,
}

/// When an editor sends: `rate` inserts a second once `go` is true, until `stop`; it keeps
/// reading for `linger` after that, so what is in flight still counts.
#[derive(Clone)]
pub struct Pace {
    pub rate: f64,
    pub go: watch::Receiver<bool>,
    pub stop: Arc<AtomicBool>,
    pub linger: Duration,
}

/// Marker inside each inserted string: `@{editor:05}:{micros:012}#`.
pub fn marker(editor: usize, at: u64) -> String {
    format!("@{editor:05}:{at:012}#")
}

/// Every marker in `data` from an editor other than `me`: its sender and send time.
pub fn markers(data: &[u8], me: usize, mut f: impl FnMut(usize, u64)) {
    let mut i = 0;
    while let Some(p) = data[i..].iter().position(|b| *b == b'@') {
        let s = i + p;
        i = s + 1;
        let Some(m) = data.get(s + 1..s + 20) else {
            break;
        };
        if m[5] != b':' || m[18] != b'#' {
            continue;
        }
        let num = |b: &[u8]| -> Option<u64> { std::str::from_utf8(b).ok()?.parse().ok() };
        if let (Some(who), Some(at)) = (num(&m[..5]), num(&m[6..18])) {
            if who as usize != me {
                f(who as usize, at);
            }
        }
    }
}

/// One editor on `url` (a `/collab/{doc}?token=` or y-websocket room URL).
pub async fn editor(url: String, id: usize, pace: Pace, stats: Arc<Stats>) -> Result<()> {
    // Small read buffer: tungstenite zero-fills all of it before each read (see
    // signaling/src/ws_io.rs); Nagle off, as browsers and the servers do.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
        .await
        .with_context(|| format!("connecting {}", url.split('?').next().unwrap_or_default()))?;
    let (mut tx, mut rx) = ws.split();
    let reader = {
        let stats = stats.clone();
        let stop = pace.stop.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = rx.next().await {
                let WsMessage::Binary(b) = m else { continue };
                // Only broadcast updates (sync, update): not the initial state.
                if b.len() < 2 || b[0] != 0 || b[1] != 2 {
                    continue;
                }
                let now = micros();
                let measuring = stats.measuring.load(Ordering::Relaxed);
                markers(&b, id, |_, at| {
                    if measuring {
                        stats.received.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut l) = stats.latencies_us.lock() {
                            l.push(now.saturating_sub(at).min(u32::MAX as u64) as u32);
                        }
                    }
                });
            }
            if !stop.load(Ordering::Relaxed) {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut go = pace.go.clone();
    let _ = go.wait_for(|g| *g).await;
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("code");
    let period = Duration::from_secs_f64(1.0 / pace.rate);
    // Editors start spread over one period.
    tokio::time::sleep(period.mul_f64((id % 97) as f64 / 97.0)).await;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !pace.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let before = doc.transact().state_vector();
        {
            let mut txn = doc.transact_mut();
            let len = text.get_string(&txn).len() as u32;
            text.insert(&mut txn, len, &marker(id, micros()));
        }
        let update = doc.transact().encode_state_as_update_v1(&before);
        let msg = Message::Sync(SyncMessage::Update(update)).encode_v1();
        if tx.send(WsMessage::Binary(msg.into())).await.is_err() {
            break;
        }
        if stats.measuring.load(Ordering::Relaxed) {
            stats.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    tokio::time::sleep(pace.linger).await;
    reader.abort();
    let _ = tx.close().await;
    Ok(())
}
