//! `GET /rtc/{room}?token=...`: the room signaling WebSocket (JSON messages).
//!
//! Client -> server: `offer`, `answer`, `candidate`, `layer`, `leave`, `ping`, `chat`, `mute`,
//! `remove` and `group` (moderators), and the
//! classroom's `hand`, `poll_create`, `vote`, `poll_close` (`crate::classroom`).
//! Server -> client: `joined`, `answer`, `error`, `pong`, `chat`, `chat_ack`, `chat_synced`,
//! `hands`, `poll`, `poll_created`, `vote_ack`, `track_muted`,
//! and every [`sfu::Signal`] (`offer`, `participant_joined`, `participant_left`,
//! `track_published`, `track_unpublished`, `subscribed`, `speakers`, `layers_needed`, `closed`).
//!
//! Chat (`crate::chat`): after `joined`/`resumed` the server sends the messages after
//! `?chat_after=N` (or the last `chat.backlog` without it), each a `chat` with its `seq`, then
//! `chat_synced`; then live `chat` messages follow, in order, each once.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;
use sfu::{JoinRequest, PeerKind, Permissions, Quality, Signal, TrackId};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::error::ApiError;
use crate::server_msg::ServerMsg;
use crate::state::{AppState, Resumable};
use crate::token::Claims;

/// Signaling messages above this are refused (an offer with simulcast is ~10 KiB).
const MAX_MESSAGE: usize = 64 * 1024;
/// A client that breaks the protocol this often is disconnected.
const MAX_ERRORS: u32 = 20;
/// Frames per second a room client may send, sustained, and at once (a browser sends a few per
/// second: candidates, layer choices, pings).
const MESSAGES_PER_S: u32 = 50;
const MESSAGE_BURST: u32 = 400;
/// Offers (first offers, re-offers, ICE restarts) per second, and at once.
const OFFERS_PER_S: u32 = 2;
const OFFER_BURST: u32 = 10;

/// How long a room client whose WebSocket dropped keeps its place (and media) for a resume.
pub const RESUME_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    pub token: Option<String>,
    /// The `resume` key from `joined`: reattach to the same participant after a dropped socket.
    pub resume: Option<String>,
    /// The last chat sequence number the client has: it is sent what came after.
    pub chat_after: Option<u64>,
}

enum Entry {
    Join,
    Resume(String),
}

/// Why a session loop ended.
enum End {
    /// The client left (leave message, clean close, too many bad messages) or the SFU ended it.
    Left,
    /// The socket dropped: keep the participant for [`RESUME_GRACE`].
    Dropped,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMsg {
    Offer {
        sdp: String,
        /// What the offer's m-lines carry, by mid (`{"1": "screen"}`); unnamed ones are a
        /// camera or a microphone.
        #[serde(default)]
        sources: std::collections::BTreeMap<String, sfu::TrackSource>,
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
    Chat {
        text: String,
        /// The client's own id for the message, echoed in `chat_ack` or `error`.
        #[serde(default)]
        id: serde_json::Value,
    },
    /// Mute or unmute a track: one's own, or (moderators) mute another's.
    Mute {
        #[serde(default)]
        track: Option<u64>,
        /// Instead of `track`: one's own microphone (`audio`) or camera (`video`).
        #[serde(default)]
        kind: Option<sfu::MediaKindName>,
        /// Instead of `track` or `kind`: one's own tracks of this source (`screen`, ...).
        #[serde(default)]
        source: Option<sfu::TrackSource>,
        muted: bool,
    },
    /// A moderator removes a participant from the room.
    Remove {
        participant: u64,
    },
    /// A moderator moves a participant (itself too) to a breakout, or back (`group` null).
    Group {
        participant: u64,
        #[serde(default)]
        group: Option<String>,
    },
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
    let entry = match q.resume {
        None => Entry::Join,
        Some(key) => {
            let ok = s.resumable.lock().ok().is_some_and(|m| {
                m.get(&key)
                    .is_some_and(|r| r.room == room && r.identity == claims.sub)
            });
            if !ok {
                return Err(ApiError::NotFound("unknown or expired resume key".into()));
            }
            Entry::Resume(key)
        }
    };
    Ok(crate::ws_io::tuned(ws)
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(s, room, claims, entry, q.chat_after, socket)))
}

async fn session(
    s: AppState,
    room: String,
    claims: Claims,
    entry: Entry,
    chat_after: Option<u64>,
    socket: WebSocket,
) {
    let (tx, mut rx) = socket.split();
    let mut tx = crate::ws_io::Writer::new(tx, crate::ws_io::RTC_WRITE_DEADLINE);
    let (sig_tx, mut sig_rx) = mpsc::unbounded_channel::<Signal>();
    let entered = match entry {
        Entry::Join => join(&s, &room, &claims, sig_tx)
            .await
            .map_err(|e| e.to_string()),
        Entry::Resume(key) => resume(&s, key, sig_tx).await,
    };
    let (pid, key, generation, hello) = match entered {
        Ok(v) => v,
        Err(e) => {
            let _ = tx.send(json(&error_msg(&e))).await;
            let _ = tx.close().await;
            return;
        }
    };
    // The room's shared document over the participant's `yjs` data channel.
    let mut link = s.collab.clone().map(|c| {
        let write = claims.grants.publish_data || claims.grants.admin;
        crate::collab_dc::DcLink::new(c, s.sfu.clone(), pid, room.clone(), write)
    });
    let mut end = None;
    if tx.send(json(&hello)).await.is_err() {
        end = Some(End::Dropped);
    }
    let mut chat = None;
    if let (None, Some(c)) = (&end, &s.chat) {
        let write = claims.grants.publish_data || claims.grants.admin;
        match crate::chat::ChatSession::open(c, &room, &claims.sub, pid.0, write, chat_after).await
        {
            Ok((session, first)) => {
                chat = Some(session);
                for f in first {
                    if tx.send(Message::Text(f.as_ref().into())).await.is_err() {
                        end = Some(End::Dropped);
                        break;
                    }
                }
            }
            Err(e) => {
                warn!(participant = %pid, %room, error = %e, "chat unavailable for this session");
                let _ = tx
                    .send(json(&error_msg(&format!("chat unavailable: {e}"))))
                    .await;
            }
        }
    }
    let mut class = None;
    if let (None, Some(c)) = (&end, &s.classroom) {
        let (session, first) = crate::classroom::ClassSession::open(
            c,
            &room,
            pid.0,
            &claims.sub,
            claims.grants.admin,
            claims.grants.publish_data || claims.grants.admin,
        );
        class = Some(session);
        for f in first {
            if tx.send(Message::Text(f.as_ref().into())).await.is_err() {
                end = Some(End::Dropped);
                break;
            }
        }
    }
    let end = match end {
        Some(e) => e,
        None => {
            let mut ctx = Ctx {
                link: &mut link,
                chat: &mut chat,
                class: &mut class,
                moderator: claims.grants.admin,
            };
            run(&s, pid, &mut tx, &mut rx, &mut sig_rx, &mut ctx).await
        }
    };
    let _ = tx.close().await;
    match end {
        End::Left => {
            info!(participant = %pid, %room, "signaling closed: left");
            if let Ok(mut m) = s.resumable.lock() {
                m.remove(&key);
            }
            s.sfu.leave(pid);
            if let Some(c) = &class {
                c.left();
            }
        }
        End::Dropped => {
            info!(participant = %pid, %room, "signaling dropped: waiting {RESUME_GRACE:?} for a resume");
            let s = s.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RESUME_GRACE).await;
                let expired = s.resumable.lock().ok().is_some_and(|mut m| {
                    let stale = m.get(&key).is_some_and(|r| r.generation == generation);
                    if stale {
                        m.remove(&key);
                    }
                    stale
                });
                if expired {
                    info!(participant = %pid, "not resumed: participant leaves");
                    s.sfu.leave(pid);
                    if let Some(c) = &class {
                        c.left();
                    }
                }
            });
        }
    }
}

type Joined = (sfu::ParticipantId, String, u64, ServerMsg);

async fn join(
    s: &AppState,
    room: &str,
    claims: &Claims,
    sig_tx: mpsc::UnboundedSender<Signal>,
) -> Result<Joined, sfu::SfuError> {
    let req = JoinRequest {
        room: room.to_string(),
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
    let joined = s.sfu.join(req, Some(sig_tx)).await?;
    let pid = joined.participant;
    let key = {
        use rand::Rng;
        let n: u128 = rand::rng().random();
        format!("{n:032x}")
    };
    if let Ok(mut m) = s.resumable.lock() {
        m.insert(
            key.clone(),
            Resumable {
                participant: pid,
                room: room.to_string(),
                identity: claims.sub.clone(),
                generation: 0,
            },
        );
    }
    let hello = ServerMsg::Joined {
        participant: pid,
        identity: claims.sub.clone(),
        room: room.to_string(),
        grants: claims.grants,
        resume: key.clone(),
        participants: joined.participants,
        tracks: joined.tracks,
        ice_servers: s.turn.ice_servers(&claims.sub),
    };
    Ok((pid, key, 0, hello))
}

async fn resume(
    s: &AppState,
    key: String,
    sig_tx: mpsc::UnboundedSender<Signal>,
) -> Result<Joined, String> {
    let r = s
        .resumable
        .lock()
        .ok()
        .and_then(|mut m| {
            m.get_mut(&key).map(|r| {
                r.generation += 1;
                r.clone()
            })
        })
        .ok_or("unknown or expired resume key")?;
    let (participants, tracks) = s
        .sfu
        .attach(r.participant, sig_tx)
        .await
        .map_err(|e| e.to_string())?;
    info!(participant = %r.participant, room = %r.room, "signaling resumed");
    let hello = ServerMsg::Resumed {
        participant: r.participant,
        identity: r.identity.clone(),
        room: r.room.clone(),
        resume: key.clone(),
        participants,
        tracks,
        ice_servers: s.turn.ice_servers(&r.identity),
    };
    Ok((r.participant, key, r.generation, hello))
}

type WsTx = crate::ws_io::Writer;
type WsRx = futures_util::stream::SplitStream<WebSocket>;

/// Relays messages both ways until the client leaves or the socket drops.
async fn run(
    s: &AppState,
    pid: sfu::ParticipantId,
    tx: &mut WsTx,
    rx: &mut WsRx,
    sig_rx: &mut mpsc::UnboundedReceiver<Signal>,
    ctx: &mut Ctx<'_>,
) -> End {
    let Ctx {
        link,
        chat,
        class,
        moderator,
    } = ctx;
    let mut errors = 0u32;
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    let now = std::time::Instant::now();
    // Every frame is charged (control frames too: each ping is answered); offers have their
    // own, tighter bucket because each costs an SDP negotiation in the media thread.
    let mut frames = crate::rate::TokenBucket::new(MESSAGES_PER_S, MESSAGE_BURST, now);
    let mut offers = crate::rate::TokenBucket::new(OFFERS_PER_S, OFFER_BURST, now);
    loop {
        tokio::select! {
            msg = rx.next() => {
                if matches!(msg, Some(Ok(_))) && !frames.take(std::time::Instant::now()) {
                    warn!(participant = %pid, "signaling: over {MESSAGES_PER_S} messages per second; closing");
                    crate::ws_io::close_and_drain(tx, rx, 4429, &format!("over {MESSAGES_PER_S} messages per second")).await;
                    return End::Left;
                }
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) => return End::Left,
                    None => return End::Dropped,
                    Some(Ok(Message::Binary(_))) => {
                        errors += 1;
                        let _ = tx.send(json(&error_msg("binary messages are not part of the protocol"))).await;
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        debug!(participant = %pid, "websocket error: {e}");
                        return End::Dropped;
                    }
                };
                match handle(s, pid, *moderator, &text, &mut offers, chat, class).await {
                    Ok(Some(reply)) => {
                        if let ServerMsg::Error { message, .. } = &reply {
                            errors += 1;
                            warn!(participant = %pid, "signaling message refused: {message:?}");
                        }
                        if tx.send(json(&reply)).await.is_err() {
                            return End::Dropped;
                        }
                    }
                    Ok(None) => {}
                    Err(Leave) => return End::Left,
                }
                if errors > MAX_ERRORS {
                    crate::ws_io::close_and_drain(tx, rx, 4400, "too many bad messages").await;
                    return End::Left;
                }
            }
            event = class_next(class) => {
                if tx.send(Message::Text(event.as_ref().into())).await.is_err() {
                    return End::Dropped;
                }
            }
            frames = chat_next(chat) => {
                for f in frames {
                    if tx.send(Message::Text(f.as_ref().into())).await.is_err() {
                        return End::Dropped;
                    }
                }
            }
            out = collab_next(link) => {
                if let Some(l) = link.as_mut() {
                    l.deliver(out);
                }
            }
            sig = sig_rx.recv() => {
                // The sender is gone: the SFU removed this participant.
                let Some(sig) = sig else { return End::Left };
                match (&sig, link.as_mut()) {
                    (Signal::AppOpen, Some(l)) => {
                        l.open().await;
                        continue;
                    }
                    (Signal::AppData { data }, Some(l)) => {
                        l.data(data).await;
                        continue;
                    }
                    (Signal::AppOpen | Signal::AppData { .. }, None) => continue,
                    _ => {}
                }
                let closed = matches!(sig, Signal::Closed { .. });
                if tx.send(json(&sig)).await.is_err() {
                    return End::Dropped;
                }
                if closed {
                    return End::Left;
                }
            }
            _ = ping.tick() => {
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    return End::Dropped;
                }
            }
        }
    }
}

struct Leave;

/// What a session carries besides the SFU: the document link, chat, the classroom.
struct Ctx<'a> {
    link: &'a mut Option<crate::collab_dc::DcLink>,
    chat: &'a mut Option<crate::chat::ChatSession>,
    class: &'a mut Option<crate::classroom::ClassSession>,
    /// The token has the admin grant: moderator actions are allowed.
    moderator: bool,
}

async fn class_next(class: &mut Option<crate::classroom::ClassSession>) -> std::sync::Arc<str> {
    match class.as_mut() {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

async fn chat_next(chat: &mut Option<crate::chat::ChatSession>) -> Vec<std::sync::Arc<str>> {
    match chat.as_mut() {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

async fn collab_next(link: &mut Option<crate::collab_dc::DcLink>) -> collab::Out {
    match link.as_mut() {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

/// One client message; `Err(Leave)` ends the session.
#[allow(clippy::too_many_arguments)]
async fn handle(
    s: &AppState,
    pid: sfu::ParticipantId,
    moderator: bool,
    text: &str,
    offers: &mut crate::rate::TokenBucket,
    chat: &mut Option<crate::chat::ChatSession>,
    class: &mut Option<crate::classroom::ClassSession>,
) -> Result<Option<ServerMsg>, Leave> {
    let msg = match serde_json::from_str::<ClientMsg>(text) {
        Ok(m) => m,
        Err(e) => {
            // Not a signaling message: perhaps a classroom one (`hand`, `vote`, ...).
            return Ok(
                match serde_json::from_str::<crate::classroom::ClassMsg>(text) {
                    Ok(m) => match class.as_mut() {
                        Some(c) => c.handle(m),
                        None => Some(error_msg("classroom tools are not enabled on this server")),
                    },
                    Err(e2)
                        if e.to_string().contains("unknown variant")
                            && !e2.to_string().contains("unknown variant") =>
                    {
                        Some(error_msg(&format!("malformed message: {e2}")))
                    }
                    Err(_) => Some(error_msg(&format!("malformed message: {e}"))),
                },
            );
        }
    };
    if matches!(msg, ClientMsg::Offer { .. }) && !offers.take(std::time::Instant::now()) {
        return Ok(Some(error_msg(&format!(
            "over {OFFERS_PER_S} offers per second (burst {OFFER_BURST}): this one is ignored"
        ))));
    }
    let r = match msg {
        ClientMsg::Offer { sdp, sources } => s
            .sfu
            .offer(pid, sdp, sources.into_iter().collect())
            .await
            .map(|sdp| Some(ServerMsg::Answer { sdp })),
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
        ClientMsg::Ping => Ok(Some(ServerMsg::Pong)),
        ClientMsg::Mute {
            track,
            kind,
            source,
            muted,
        } => {
            let target = match (track, kind, source) {
                (Some(t), None, None) => sfu::MuteTarget::Track(TrackId(t)),
                (None, Some(k), None) => sfu::MuteTarget::Own(sfu::TrackSource::default_for(k)),
                (None, None, Some(src)) => sfu::MuteTarget::Own(src),
                _ => {
                    return Ok(Some(error_msg(
                        "mute names one of: a track, a kind (audio, video) or a source (camera, microphone, screen, screen_audio)",
                    )))
                }
            };
            s.sfu
                .mute(pid, moderator, target, muted)
                .await
                .map(|_| None)
        }
        ClientMsg::Group { participant, group } => s
            .sfu
            .set_group(pid, moderator, sfu::ParticipantId(participant), group)
            .await
            .map(|_| None),
        ClientMsg::Remove { participant } => {
            if !moderator {
                return Ok(Some(error_msg(
                    "removing a participant is for moderators (a token with the admin grant)",
                )));
            }
            s.sfu
                .remove(pid, sfu::ParticipantId(participant))
                .await
                .map(|_| None)
        }
        ClientMsg::Chat { text, id } => {
            return Ok(Some(match chat.as_mut() {
                Some(c) => c.send(text, id).await,
                None => error_msg("chat is not enabled on this server"),
            }))
        }
    };
    Ok(match r {
        Ok(v) => v,
        Err(e) => Some(error_msg(&e.to_string())),
    })
}

fn error_msg(m: &str) -> ServerMsg {
    ServerMsg::error(m)
}

fn json<T: serde::Serialize>(v: &T) -> Message {
    Message::Text(serde_json::to_string(v).unwrap_or_default().into())
}
