//! Room chat: ordered, acknowledged, durable, resumable.
//!
//! Each room's messages get a sequence number from the server (1, 2, ...). A message is
//! appended to the room's history file and synced before it is acknowledged to its sender and
//! sent to everyone: what the server acknowledged survives a crash. A client that reconnects
//! says the last sequence number it has (`chat_after`) and gets exactly what it missed, in
//! order, then the live messages, nothing twice. History is bounded (`chat.history` messages
//! per room, kept on disk as JSON lines in `{storage.dir}/chat/{room}.jsonl`).
//!
//! Writes go through one task per room that takes every message queued meanwhile and syncs
//! once for all of them (group commit): a busy room pays one fsync per batch, not per message.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{info, warn};

use crate::server_msg::ServerMsg;

/// `[chat]` in aula.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatSettings {
    /// Messages kept per room (on disk and in memory); older ones are forgotten.
    pub history: usize,
    /// Messages a newcomer (no `chat_after`) is sent on joining.
    pub backlog: usize,
    /// Largest message text, in bytes of UTF-8.
    pub max_text_bytes: usize,
    /// Messages per second one participant may send, sustained, and at once.
    pub rate_per_s: u32,
    pub burst: u32,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            history: 1000,
            backlog: 100,
            max_text_bytes: 4096,
            rate_per_s: 5,
            burst: 20,
        }
    }
}

impl ChatSettings {
    pub fn check(&self) -> Result<(), String> {
        if self.history == 0 || self.backlog > self.history {
            return Err("chat.history must be > 0 and chat.backlog <= chat.history".into());
        }
        if self.max_text_bytes == 0 || self.max_text_bytes > 60_000 {
            return Err("chat.max_text_bytes must be 1..=60000 (a room message is a WebSocket frame of at most 64 KiB)".into());
        }
        if self.rate_per_s == 0 || self.burst < self.rate_per_s {
            return Err("chat.rate_per_s must be > 0 and chat.burst >= rate_per_s".into());
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum ChatError {
    #[error("a chat message is 1 to {0} bytes of text")]
    BadText(usize),
    #[error("a chat message id is a string of at most 64 bytes")]
    BadId,
    #[error("the room's chat is busy; try again")]
    Busy,
    #[error("the chat history could not be written: {0}")]
    Storage(String),
}

/// One room message as stored and as sent (`{"type":"chat",...}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub seq: u64,
    /// The sender's identity (token `sub`).
    pub identity: String,
    /// The sender's participant id at the time.
    pub participant: u64,
    pub text: String,
    /// Server time it was taken, milliseconds since the Unix epoch.
    pub at: u64,
    /// The sender's own id for it (`chat.id`): a resend of an unacknowledged message with the
    /// same id is acknowledged again, not stored twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A message with its wire form, made once and shared by every subscriber.
#[derive(Debug)]
pub struct Sent {
    pub msg: ChatMessage,
    /// `{"type":"chat", ...}`.
    pub json: Arc<str>,
}

fn wire(msg: &ChatMessage) -> Arc<str> {
    #[derive(Serialize)]
    struct Wire<'a> {
        r#type: &'static str,
        #[serde(flatten)]
        msg: &'a ChatMessage,
    }
    serde_json::to_string(&Wire {
        r#type: "chat",
        msg,
    })
    .unwrap_or_default()
    .into()
}

#[derive(Clone)]
pub struct Chat {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    settings: ChatSettings,
    /// Loaded rooms; a room leaves memory when its last session lets go of it.
    rooms: Mutex<HashMap<String, Weak<ChatRoom>>>,
}

pub struct ChatRoom {
    name: String,
    state: Mutex<History>,
    live: broadcast::Sender<Arc<Sent>>,
    writes: mpsc::Sender<Write1>,
}

struct History {
    messages: VecDeque<Arc<Sent>>,
    next_seq: u64,
}

impl History {
    /// The messages after `after`, and whether some after it are no longer kept.
    fn after(&self, after: u64) -> (Vec<Arc<Sent>>, bool) {
        let oldest = self.messages.front().map_or(self.next_seq, |m| m.msg.seq);
        (
            self.messages
                .iter()
                .filter(|m| m.msg.seq > after)
                .cloned()
                .collect(),
            after + 1 < oldest,
        )
    }
}

struct Write1 {
    identity: String,
    participant: u64,
    text: String,
    id: Option<String>,
    done: oneshot::Sender<Result<Arc<Sent>, ChatError>>,
}

/// What a session is sent first, and where the live messages continue.
pub struct Subscription {
    /// Messages after the one the client had, oldest first.
    pub missed: Vec<Arc<Sent>>,
    /// The client had messages older than the history keeps: some are gone.
    pub truncated: bool,
    /// The last sequence number in `missed` (or the client's own): live messages at or
    /// below it were already sent.
    pub upto: u64,
    pub live: broadcast::Receiver<Arc<Sent>>,
}

/// Messages a live subscriber may fall behind by before it is refilled from the history.
const LIVE_QUEUE: usize = 256;
/// Messages waiting for the room's writer before senders are told it is busy.
const WRITE_QUEUE: usize = 1024;

impl Chat {
    pub fn new(dir: PathBuf, settings: ChatSettings) -> std::io::Result<Chat> {
        fs::create_dir_all(&dir)?;
        Ok(Chat {
            inner: Arc::new(Inner {
                dir,
                settings,
                rooms: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn settings(&self) -> &ChatSettings {
        &self.inner.settings
    }

    /// The room's chat, loading its history from disk if no session holds it. `room` is a
    /// valid room name (checked with the token).
    pub async fn room(&self, room: &str) -> Result<Arc<ChatRoom>, ChatError> {
        if let Some(r) = self.loaded(room) {
            return Ok(r);
        }
        let path = self.inner.dir.join(format!("{room}.jsonl"));
        let keep = self.inner.settings.history;
        let history = tokio::task::spawn_blocking(move || load(&path, keep))
            .await
            .map_err(|e| ChatError::Storage(e.to_string()))?
            .map_err(|e| ChatError::Storage(e.to_string()))?;
        let mut rooms = self
            .inner
            .rooms
            .lock()
            .map_err(|_| ChatError::Storage("chat rooms lock poisoned".into()))?;
        // Another session may have loaded it meanwhile: one room, one writer.
        if let Some(r) = rooms.get(room).and_then(Weak::upgrade) {
            return Ok(r);
        }
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let (live, _) = broadcast::channel(LIVE_QUEUE);
        let r = Arc::new(ChatRoom {
            name: room.to_string(),
            state: Mutex::new(history),
            live,
            writes,
        });
        rooms.retain(|_, w| w.strong_count() > 0);
        rooms.insert(room.to_string(), Arc::downgrade(&r));
        drop(rooms);
        tokio::spawn(writer(
            Arc::downgrade(&r),
            self.inner.dir.join(format!("{room}.jsonl")),
            keep,
            rx,
        ));
        Ok(r)
    }

    fn loaded(&self, room: &str) -> Option<Arc<ChatRoom>> {
        self.inner
            .rooms
            .lock()
            .ok()?
            .get(room)
            .and_then(Weak::upgrade)
    }

    /// Rooms whose chat is in memory.
    pub fn render_metrics(&self, out: &mut String) {
        let rooms = self
            .inner
            .rooms
            .lock()
            .map(|r| r.values().filter(|w| w.strong_count() > 0).count())
            .unwrap_or(0);
        metrics_text::Exposition::new(out).gauge("aula_chat_rooms", rooms);
    }
}

impl ChatRoom {
    /// Takes a message: resolves once it is durable, with its sequence number.
    pub async fn send(
        &self,
        settings: &ChatSettings,
        identity: &str,
        participant: u64,
        text: String,
        id: Option<String>,
    ) -> Result<Arc<Sent>, ChatError> {
        if text.is_empty() || text.len() > settings.max_text_bytes {
            return Err(ChatError::BadText(settings.max_text_bytes));
        }
        if id.as_ref().is_some_and(|i| i.len() > 64) {
            return Err(ChatError::BadId);
        }
        let (done, answer) = oneshot::channel();
        self.writes
            .try_send(Write1 {
                identity: identity.to_string(),
                participant,
                text,
                id,
                done,
            })
            .map_err(|_| ChatError::Busy)?;
        answer
            .await
            .map_err(|_| ChatError::Storage("the room's writer stopped".into()))?
    }

    /// The message `identity` already sent with this id, if the history still has it.
    fn sent_before(&self, identity: &str, id: Option<&str>) -> Option<Arc<Sent>> {
        let id = id?;
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.messages
            .iter()
            .rev()
            .find(|m| m.msg.id.as_deref() == Some(id) && m.msg.identity == identity)
            .cloned()
    }

    /// Messages after `after` (`None`: the last `backlog`), then the live ones.
    pub fn subscribe(&self, after: Option<u64>, backlog: usize) -> Subscription {
        // Under the history lock: the writer appends and broadcasts under it too, so nothing
        // falls between the history slice and the live receiver, and nothing is in both.
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.live.subscribe();
        let last = st.next_seq - 1;
        let (missed, truncated): (Vec<_>, bool) = match after {
            Some(a) => st.after(a.min(last)),
            None => {
                let skip = st.messages.len().saturating_sub(backlog);
                (st.messages.iter().skip(skip).cloned().collect(), false)
            }
        };
        Subscription {
            upto: missed
                .last()
                .map_or(after.unwrap_or(0).min(last), |m| m.msg.seq),
            missed,
            truncated,
            live,
        }
    }

    /// Messages after `after` still in the history (for a subscriber that fell behind).
    pub fn since(&self, after: u64) -> (Vec<Arc<Sent>>, bool) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .after(after)
    }

    /// The last sequence number given out (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.state
            .lock()
            .map(|s| s.next_seq - 1)
            .unwrap_or_default()
    }
}

/// Milliseconds since the Unix epoch (message and hand times).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The room's writer: batches, appends, syncs, then publishes and acknowledges.
async fn writer(room: Weak<ChatRoom>, path: PathBuf, keep: usize, mut rx: mpsc::Receiver<Write1>) {
    let mut file: Option<File> = None;
    let mut lines = count_lines(&path);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let Some(r) = room.upgrade() else { break };
        let first_seq = r.state.lock().map(|s| s.next_seq).unwrap_or(1);
        let at = now_ms();
        // Each write's answer: a new message, or the one it repeats (a resend whose first
        // try was taken before its acknowledgement was lost), from the history or this batch.
        let mut answers: Vec<Arc<Sent>> = Vec::with_capacity(batch.len());
        let mut fresh: Vec<Arc<Sent>> = Vec::with_capacity(batch.len());
        for w in &batch {
            let repeat = r.sent_before(&w.identity, w.id.as_deref()).or_else(|| {
                w.id.as_ref().and_then(|id| {
                    fresh
                        .iter()
                        .find(|m| m.msg.id.as_ref() == Some(id) && m.msg.identity == w.identity)
                        .cloned()
                })
            });
            let answer = repeat.unwrap_or_else(|| {
                let msg = ChatMessage {
                    seq: first_seq + fresh.len() as u64,
                    identity: w.identity.clone(),
                    participant: w.participant,
                    text: w.text.clone(),
                    at,
                    id: w.id.clone(),
                };
                let m = Arc::new(Sent {
                    json: wire(&msg),
                    msg,
                });
                fresh.push(m.clone());
                m
            });
            answers.push(answer);
        }
        if !fresh.is_empty() {
            let mut f = file.take();
            let p = path.clone();
            let lines_now = lines;
            let to_write = fresh.clone();
            let written =
                tokio::task::spawn_blocking(move || append(&p, &mut f, &to_write, lines_now, keep))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|r| r);
            match written {
                Ok((f, n)) => {
                    file = f;
                    lines = n;
                }
                Err(e) => {
                    warn!(room = %r.name, error = %e, "chat: history write failed; messages refused");
                    // Their numbers are burnt: a line may have reached the disk before the
                    // error, and a number must never name two messages.
                    if let Ok(mut st) = r.state.lock() {
                        st.next_seq = first_seq + fresh.len() as u64;
                    }
                    for w in batch {
                        let _ = w.done.send(Err(ChatError::Storage(e.to_string())));
                    }
                    continue;
                }
            }
            let mut st = r.state.lock().unwrap_or_else(|p| p.into_inner());
            for s in &fresh {
                st.messages.push_back(s.clone());
                let _ = r.live.send(s.clone());
            }
            while st.messages.len() > keep {
                st.messages.pop_front();
            }
            st.next_seq = first_seq + fresh.len() as u64;
        }
        for (w, s) in batch.into_iter().zip(answers) {
            let _ = w.done.send(Ok(s));
        }
    }
}

/// Appends `sent` and syncs; past twice `keep` lines the file is rewritten with the last
/// `keep` (to a temporary file, synced, renamed). Returns the open file and its line count.
fn append(
    path: &Path,
    file: &mut Option<File>,
    sent: &[Arc<Sent>],
    lines: usize,
    keep: usize,
) -> std::io::Result<(Option<File>, usize)> {
    let mut buf = Vec::new();
    let mut f = match file.take() {
        Some(f) => f,
        None => {
            // A torn last line (a crash mid-append) is ended first, or the next message
            // would be glued to it and lost with it.
            if ends_torn(path)? {
                buf.push(b'\n');
            }
            OpenOptions::new().create(true).append(true).open(path)?
        }
    };
    for s in sent {
        serde_json::to_writer(&mut buf, &s.msg).map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    f.write_all(&buf)?;
    f.sync_data()?;
    let lines = lines + sent.len();
    if lines <= 2 * keep {
        return Ok((Some(f), lines));
    }
    drop(f);
    let kept = load(path, keep)?;
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut t = File::create(&tmp)?;
        let mut out = Vec::new();
        for m in &kept.messages {
            serde_json::to_writer(&mut out, &m.msg).map_err(std::io::Error::other)?;
            out.push(b'\n');
        }
        t.write_all(&out)?;
        t.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        File::open(d)?.sync_all()?;
    }
    info!(path = %path.display(), kept = kept.messages.len(), "chat: history compacted");
    Ok((None, kept.messages.len()))
}

fn ends_torn(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if f.metadata()?.len() == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

fn count_lines(path: &Path) -> usize {
    File::open(path)
        .map(|f| BufReader::new(f).lines().count())
        .unwrap_or(0)
}

/// The last `keep` messages of a history file. A torn or foreign line (a crash mid-append,
/// a hand edit) is skipped with a log line; sequence numbers continue after the highest.
fn load(path: &Path, keep: usize) -> std::io::Result<History> {
    let mut messages = VecDeque::new();
    let mut next_seq = 1;
    match File::open(path) {
        Ok(f) => {
            for (n, line) in BufReader::new(f).split(b'\n').enumerate() {
                let line = line?;
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<ChatMessage>(&line) {
                    Ok(m) if m.seq >= next_seq => {
                        next_seq = m.seq + 1;
                        messages.push_back(Arc::new(Sent {
                            json: wire(&m),
                            msg: m,
                        }));
                        if messages.len() > keep {
                            messages.pop_front();
                        }
                    }
                    Ok(m) => {
                        warn!(path = %path.display(), line = n + 1, seq = m.seq, "chat: out-of-order line skipped")
                    }
                    Err(e) => {
                        warn!(path = %path.display(), line = n + 1, error = %e, "chat: unreadable line skipped")
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(History { messages, next_seq })
}

/// One room session's side of the chat: what it has been sent, and its send allowance.
pub struct ChatSession {
    chat: Chat,
    room: Arc<ChatRoom>,
    live: broadcast::Receiver<Arc<Sent>>,
    /// The highest sequence number this session has been sent.
    upto: u64,
    bucket: crate::rate::TokenBucket,
    identity: String,
    participant: u64,
    can_send: bool,
}

impl ChatSession {
    /// Joins the room's chat; returns the session and the frames to send first: the missed
    /// messages, in order, then `{"type":"chat_synced","last":N,"truncated":bool}`.
    pub async fn open(
        chat: &Chat,
        room: &str,
        identity: &str,
        participant: u64,
        can_send: bool,
        after: Option<u64>,
    ) -> Result<(ChatSession, Vec<Arc<str>>), ChatError> {
        let r = chat.room(room).await?;
        let sub = r.subscribe(after, chat.settings().backlog);
        let mut first: Vec<Arc<str>> = sub.missed.iter().map(|m| m.json.clone()).collect();
        first.push(
            ServerMsg::ChatSynced {
                last: sub.upto,
                truncated: sub.truncated,
            }
            .text(),
        );
        let s = chat.settings();
        Ok((
            ChatSession {
                bucket: crate::rate::TokenBucket::new(
                    s.rate_per_s,
                    s.burst,
                    std::time::Instant::now(),
                ),
                chat: chat.clone(),
                room: r,
                live: sub.live,
                upto: sub.upto,
                identity: identity.to_string(),
                participant,
                can_send,
            },
            first,
        ))
    }

    /// The next frames for this session, in order and each once (cancel-safe: nothing is
    /// lost if the future is dropped before it resolves).
    pub async fn next(&mut self) -> Vec<Arc<str>> {
        loop {
            match self.live.recv().await {
                Ok(m) if m.msg.seq > self.upto => {
                    self.upto = m.msg.seq;
                    return vec![m.json.clone()];
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // Fell behind the live queue: the history has them (it keeps more).
                    let (missed, truncated) = self.room.since(self.upto);
                    warn!(room = %self.room.name, participant = self.participant, lagged = n, "chat: subscriber fell behind; refilled from history");
                    let mut out: Vec<Arc<str>> = Vec::new();
                    if truncated {
                        out.push(
                            ServerMsg::ChatSynced {
                                last: self.upto,
                                truncated: true,
                            }
                            .text(),
                        );
                    }
                    for m in missed {
                        if m.msg.seq > self.upto {
                            self.upto = m.msg.seq;
                            out.push(m.json.clone());
                        }
                    }
                    if !out.is_empty() {
                        return out;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }

    /// A client's `{"type":"chat","text":...,"id":...}`: the reply, `chat_ack` with the
    /// message's sequence number once it is durable, or `error` with the reason (and `id`).
    pub async fn send(&mut self, text: String, id: serde_json::Value) -> ServerMsg {
        let client_id = match &id {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => {
                return ServerMsg::Error {
                    message: format!("chat: {}", ChatError::BadId),
                    id: Some(id),
                }
            }
        };
        let refuse = |reason: String| ServerMsg::Error {
            message: format!("chat: {reason}"),
            id: Some(id.clone()),
        };
        if !self.can_send {
            return refuse(
                "this token may read the chat but not write (no publish_data grant)".into(),
            );
        }
        if !self.bucket.take(std::time::Instant::now()) {
            let s = self.chat.settings();
            return refuse(format!(
                "over {} messages per second (burst {}): this one is dropped",
                s.rate_per_s, s.burst
            ));
        }
        let settings = self.chat.settings().clone();
        match self
            .room
            .send(&settings, &self.identity, self.participant, text, client_id)
            .await
        {
            Ok(m) => ServerMsg::ChatAck {
                id: id.clone(),
                seq: m.msg.seq,
            },
            Err(e) => refuse(e.to_string()),
        }
    }
}
