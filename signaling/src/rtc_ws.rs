//! `GET /rtc/{room}?token=...`: the room signaling WebSocket (JSON messages).
//!
//! Client -> server: `offer`, `answer`, `candidate`, `layer`, `leave`, `ping`.
//! Server -> client: `joined`, `answer`, `error`, `pong`, and every [`sfu::Signal`]
//! (`offer`, `participant_joined`, `participant_left`, `track_published`, `track_unpublished`,
//! `subscribed`, `speakers`, `layers_needed`, `closed`).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use sfu::{JoinRequest, PeerKind, Permissions, Quality, Signal, TrackId};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::error::ApiError;
use crate::http::AppState;
use crate::token::Claims;

/// Signaling messages above this are refused (an offer with simulcast is ~10 KiB).
const MAX_MESSAGE: usize = 64 * 1024;
/// A client that breaks the protocol this often is disconnected.
const MAX_ERRORS: u32 = 20;

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMsg {
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: String,
    },
    Layer {
        track: Option<u64>,
        quality: Quality,
    },
    Leave,
    Ping,
}

pub async fn upgrade(
    State(s): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Refuse before upgrading, so a bad token is a plain 401/403.
    let claims = s
        .keys
        .verify_for_room(q.token.as_deref().unwrap_or(""), &room)?;
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(s, room, claims, socket)))
}

async fn session(s: AppState, room: String, claims: Claims, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let (sig_tx, mut sig_rx) = mpsc::unbounded_channel::<Signal>();
    let req = JoinRequest {
        room: room.clone(),
        identity: claims.sub.clone(),
        kind: PeerKind::Room,
        perms: Permissions {
            publish: claims.grants.publish,
            subscribe: claims.grants.subscribe,
            publish_data: claims.grants.publish_data,
        },
        offer: None,
        quality: Quality::High,
    };
    let joined = match s.sfu.join(req, Some(sig_tx)).await {
        Ok(j) => j,
        Err(e) => {
            let _ = tx.send(json(&error_msg(&e.to_string()))).await;
            let _ = tx.close().await;
            return;
        }
    };
    let pid = joined.participant;
    let hello = serde_json::json!({
        "type": "joined",
        "participant": pid,
        "identity": claims.sub,
        "room": room,
        "grants": claims.grants,
        "participants": joined.participants,
        "tracks": joined.tracks,
    });
    if tx.send(json(&hello)).await.is_err() {
        s.sfu.leave(pid);
        return;
    }
    let mut errors = 0u32;
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(Message::Binary(_))) => {
                        errors += 1;
                        let _ = tx.send(json(&error_msg("binary messages are not part of the protocol"))).await;
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        debug!(participant = %pid, "websocket error: {e}");
                        break;
                    }
                };
                match handle(&s, pid, &text).await {
                    Ok(Some(reply)) => {
                        if reply["type"] == "error" {
                            errors += 1;
                            warn!(participant = %pid, "signaling message refused: {}", reply["message"]);
                        }
                        if tx.send(json(&reply)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(Leave) => break,
                }
                if errors > MAX_ERRORS {
                    let _ = tx.send(Message::Close(Some(CloseFrame { code: 4400, reason: "too many bad messages".into() }))).await;
                    break;
                }
            }
            sig = sig_rx.recv() => {
                let Some(sig) = sig else { break };
                let closed = matches!(sig, Signal::Closed { .. });
                if tx.send(json(&sig)).await.is_err() || closed {
                    break;
                }
            }
            _ = ping.tick() => {
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    info!(participant = %pid, %room, "signaling closed");
    s.sfu.leave(pid);
    let _ = tx.close().await;
}

struct Leave;

/// One client message; `Err(Leave)` ends the session.
async fn handle(
    s: &AppState,
    pid: sfu::ParticipantId,
    text: &str,
) -> Result<Option<serde_json::Value>, Leave> {
    let msg = match serde_json::from_str::<ClientMsg>(text) {
        Ok(m) => m,
        Err(e) => return Ok(Some(error_msg(&format!("malformed message: {e}")))),
    };
    let r = match msg {
        ClientMsg::Offer { sdp } => s
            .sfu
            .offer(pid, sdp)
            .await
            .map(|answer| Some(serde_json::json!({"type": "answer", "sdp": answer}))),
        ClientMsg::Answer { sdp } => s.sfu.answer(pid, sdp).await.map(|_| None),
        ClientMsg::Candidate { candidate } => {
            if candidate.is_empty() {
                // End-of-candidates.
                return Ok(None);
            }
            s.sfu.candidate(pid, candidate).await.map(|_| None)
        }
        ClientMsg::Layer { track, quality } => s
            .sfu
            .preference(pid, track.map(TrackId), quality)
            .await
            .map(|_| None),
        ClientMsg::Leave => return Err(Leave),
        ClientMsg::Ping => Ok(Some(serde_json::json!({"type": "pong"}))),
    };
    Ok(match r {
        Ok(v) => v,
        Err(e) => Some(error_msg(&e.to_string())),
    })
}

fn error_msg(m: &str) -> serde_json::Value {
    serde_json::json!({"type": "error", "message": m})
}

fn json<T: serde::Serialize>(v: &T) -> Message {
    Message::Text(serde_json::to_string(v).unwrap_or_default().into())
}
