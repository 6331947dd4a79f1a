//! `GET /collab/{room}?token=`: a y-websocket-compatible WebSocket (one binary y-protocols
//! message per frame), so an unmodified `WebsocketProvider('ws://host/collab', room, doc,
//! { params: { token } })` syncs. The token's `publish_data` grant allows editing; without it
//! the client reads only. `{room}~{identity}` is that participant's own work document (an
//! assessment answer): their room token opens it, and admins' do; the teacher view
//! (`teacher_ws.rs`) follows all of them.

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures_util::StreamExt;
use tracing::{debug, warn};

use crate::error::ApiError;
use crate::state::AppState;
use collab::{Close, Out, CLOSE_MALFORMED};

#[derive(serde::Deserialize)]
pub struct CollabQuery {
    token: Option<String>,
}

impl CollabQuery {
    pub fn token(&self) -> &str {
        self.token.as_deref().unwrap_or("")
    }
}

pub async fn upgrade(
    State(s): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<CollabQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let collab = s.collab()?;
    if !collab::valid_document_name(&room) {
        return Err(ApiError::BadRequest(
            "document names are a room (letters, digits, '-', '_', '.'), optionally ~identity"
                .into(),
        ));
    }
    // Refused before the upgrade: a bad token is a plain 401/403.
    let (base, owner) = match room.split_once('~') {
        Some((b, o)) => (b, Some(o)),
        None => (room.as_str(), None),
    };
    let claims = s.keys.verify_for_room(q.token(), base)?;
    if owner.is_some_and(|o| o != claims.sub && !claims.grants.admin) {
        return Err(crate::token::TokenError::WrongRoom.into());
    }
    let can_write = claims.grants.publish_data || claims.grants.admin;
    let seat = collab.seat(&room, &claims.sub).map_err(|e| {
        warn!(%room, identity = %claims.sub, "collab: connection refused: {e}");
        ApiError::TooMany(e)
    })?;
    // Frames over the limit still arrive, so the client gets a close code that says why. A
    // reader sends sync requests and its presence (at most 64 KiB) only: a smaller limit, so
    // unfinished frames cannot pin much memory.
    let limit = collab.settings().max_message_bytes.saturating_mul(2) + 1024;
    let limit = if can_write {
        limit
    } else {
        limit.min(READER_LIMIT)
    };
    Ok(crate::ws_io::tuned(ws)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            session(collab, room, can_write, socket).await;
            drop(seat);
        }))
}

/// Largest frame a read-only client may send (its presence state is at most 64 KiB).
const READER_LIMIT: usize = 160 << 10;

async fn session(collab: collab::Collab, room: String, can_write: bool, socket: WebSocket) {
    let (tx, mut rx) = socket.split();
    // A client that takes no bytes for the idle timeout is as gone as one that sends none.
    let idle = std::time::Duration::from_secs(collab.settings().idle_timeout_s);
    let mut tx = crate::ws_io::Writer::new(tx, idle);
    let mut conn = match collab.join(&room, can_write).await {
        Ok(c) => c,
        Err(e) => {
            warn!(%room, error = %e, "collab: cannot open the room's document");
            let _ = tx
                .send(close(&Close {
                    code: 1011,
                    reason: "document unavailable".into(),
                }))
                .await;
            return;
        }
    };
    // Control frames cost an answer each (tungstenite pongs every ping): charged apart.
    let mut pings = crate::rate::TokenBucket::new(
        crate::ws_io::PINGS_PER_S,
        crate::ws_io::PING_BURST,
        std::time::Instant::now(),
    );
    for m in conn.greeting() {
        if tx.send(WsMessage::Binary(m)).await.is_err() {
            return;
        }
    }
    let mut ping = tokio::time::interval(idle / 3);
    ping.reset();
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if heard.elapsed() >= idle {
                    let c = Close { code: collab::CLOSE_TOO_SLOW, reason: format!("no complete message for {} s", idle.as_secs()) };
                    warn!(%room, "collab: closing a client: {}", c.reason);
                    return close_and_drain(&mut tx, &mut rx, &c).await;
                }
                if tx.send(WsMessage::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            incoming = rx.next() => {
                heard = tokio::time::Instant::now();
                let data = match incoming {
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(WsMessage::Text(_))) => {
                        let c = Close { code: CLOSE_MALFORMED, reason: "y-protocols messages are binary".into() };
                        return close_and_drain(&mut tx, &mut rx, &c).await;
                    }
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {
                        if pings.take(std::time::Instant::now()) {
                            continue;
                        }
                        let c = Close { code: collab::CLOSE_RATE, reason: format!("over {} pings per second", crate::ws_io::PINGS_PER_S) };
                        warn!(%room, "collab: closing a client: {}", c.reason);
                        return close_and_drain(&mut tx, &mut rx, &c).await;
                    }
                    Some(Ok(WsMessage::Close(_))) | None => return,
                    Some(Err(e)) => {
                        if crate::ws_io::is_disconnect(&e) {
                            debug!(%room, error = %e, "collab: client went away");
                        } else {
                            warn!(%room, error = %e, "collab: WebSocket error");
                        }
                        return;
                    }
                };
                if !can_write && data.len() > READER_LIMIT / 2 {
                    let c = Close { code: collab::CLOSE_TOO_BIG, reason: format!("a read-only client's message is at most {} bytes", READER_LIMIT / 2) };
                    warn!(%room, "collab: closing a client: {}", c.reason);
                    return close_and_drain(&mut tx, &mut rx, &c).await;
                }
                match conn.handle_on_runtime(&data) {
                    Ok(replies) => {
                        for m in replies {
                            if tx.send(WsMessage::Binary(m)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(c) => return close_and_drain(&mut tx, &mut rx, &c).await,
                }
            }
            out = conn.recv() => match out {
                Some(Out::Msg(m)) => {
                    // Whatever else is queued goes out in the same write: one flush (one
                    // syscall) for many messages when the room is busy.
                    if tx.feed(WsMessage::Binary(m)).await.is_err() {
                        return;
                    }
                    for _ in 0..256 {
                        let Some(m) = conn.try_recv() else { break };
                        if tx.feed(WsMessage::Binary(m)).await.is_err() {
                            return;
                        }
                    }
                    if tx.flush().await.is_err() {
                        return;
                    }
                }
                Some(Out::Close(c)) => return close_and_drain(&mut tx, &mut rx, &c).await,
                None => return,
            }
        }
    }
}

async fn close_and_drain(
    tx: &mut crate::ws_io::Writer,
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
    c: &Close,
) {
    crate::ws_io::close_and_drain(tx, rx, c.code, &c.reason).await
}

fn close(c: &Close) -> WsMessage {
    crate::ws_io::close_frame(c.code, &c.reason)
}
