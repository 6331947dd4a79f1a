//! `GET /collab/{room}/teacher?token=`: the teacher's live view of every student's work in a
//! room. Students work in their own documents, `{room}~{identity}` (their room token opens
//! their own); the teacher (admin grant) gets each document's full state at connect, then
//! every `collab.teacher_interval_ms` one merged update per document that changed, so a few
//! fast typers cannot flood the dashboard. A frame is lib0-encoded: the document name
//! (varString) and a Yjs update (varUint8Array). A view whose queue overflowed starts over from
//! full states.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures_util::StreamExt;
use tracing::{info, warn};
use yrs::encoding::write::Write;
use yrs::updates::encoder::{Encoder, EncoderV1};

use crate::collab_ws::CollabQuery;
use crate::error::ApiError;
use crate::state::AppState;
use crate::token::TokenError;

/// Updates one teacher view may have waiting between flushes before it starts over.
const QUEUE: usize = 8192;

pub async fn upgrade(
    State(s): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<CollabQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let collab = s.collab()?;
    let claims = s.keys.verify_for_room(q.token(), &room)?;
    if !claims.grants.admin {
        return Err(TokenError::MissingGrant("admin").into());
    }
    if !collab::valid_document_name(&room) || room.contains('~') {
        return Err(ApiError::BadRequest("bad room name".into()));
    }
    Ok(crate::ws_io::tuned(ws).on_upgrade(move |socket| session(collab, room, socket)))
}

fn frame(name: &str, update: &[u8]) -> WsMessage {
    let mut e = EncoderV1::new();
    e.write_string(name);
    e.write_buf(update);
    WsMessage::Binary(Bytes::from(e.to_vec()))
}

async fn session(collab: collab::Collab, room: String, socket: WebSocket) {
    let (tx, mut rx) = socket.split();
    let idle = Duration::from_secs(collab.settings().idle_timeout_s);
    let mut tx = crate::ws_io::Writer::new(tx, idle);
    let prefix = format!("{room}~");
    let (initial, mut updates, lagged) = collab.watch(&prefix, QUEUE).await;
    info!(%room, students = initial.len(), "collab: teacher view opened");
    for (name, full) in initial {
        if tx.send(frame(&name, &full)).await.is_err() {
            return;
        }
    }
    let interval = Duration::from_millis(collab.settings().teacher_interval_ms.max(50));
    let mut tick = tokio::time::interval(interval);
    let mut pending: HashMap<Arc<str>, Vec<Bytes>> = HashMap::new();
    loop {
        tokio::select! {
            u = updates.recv() => match u {
                Some((name, update)) => pending.entry(name).or_default().push(update),
                None => return,
            },
            _ = tick.tick() => {
                let mut out = Vec::new();
                if lagged.swap(false, Ordering::Relaxed) {
                    warn!(%room, "collab: teacher view fell behind; resending full states");
                    pending.clear();
                    while updates.try_recv().is_ok() {}
                    for (name, full) in collab.states(&prefix).await {
                        out.push(frame(&name, &full));
                    }
                } else {
                    for (name, ups) in pending.drain() {
                        match yrs::merge_updates_v1(ups.iter().map(|b| b.as_ref())) {
                            Ok(merged) => out.push(frame(&name, &merged)),
                            Err(e) => warn!(doc = %name, error = %e, "collab: could not merge updates for the teacher view"),
                        }
                    }
                }
                for m in out {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }
            m = rx.next() => match m {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {} // the view is read-only
            }
        }
    }
}
