//! The collaboration channel over a room participant's WebRTC data channel labelled `yjs`.
//! The SFU hands the channel's messages to the participant's signaling session, which owns
//! this link. Browsers have no message interleaving on a channel, so big y-protocols messages
//! are chunked: every data-channel message starts with one byte, `0` a whole message, `1` a
//! chunk with more to follow, `2` the last chunk, `3` the server closing the link (then
//! `"{code} {reason}"`).

use axum::body::Bytes;
use sfu::server::SfuHandle;
use sfu::ParticipantId;
use tracing::warn;

use collab::{Close, Collab, Conn, Out, CLOSE_MALFORMED, CLOSE_TOO_BIG};

/// Payload bytes per data-channel message (well under every browser's max-message-size).
pub const CHUNK: usize = 16 * 1024;

pub const WHOLE: u8 = 0;
pub const MORE: u8 = 1;
pub const LAST: u8 = 2;
pub const CLOSED: u8 = 3;

pub struct DcLink {
    collab: Collab,
    sfu: SfuHandle,
    pid: ParticipantId,
    room: String,
    can_write: bool,
    conn: Option<Conn>,
    partial: Vec<u8>,
    closed: bool,
}

impl DcLink {
    pub fn new(
        collab: Collab,
        sfu: SfuHandle,
        pid: ParticipantId,
        room: String,
        can_write: bool,
    ) -> DcLink {
        DcLink {
            collab,
            sfu,
            pid,
            room,
            can_write,
            conn: None,
            partial: Vec::new(),
            closed: false,
        }
    }

    /// The channel opened (or reopened): a fresh sync.
    pub async fn open(&mut self) {
        self.conn = None;
        self.partial.clear();
        self.closed = false;
        match self.collab.join(&self.room, self.can_write).await {
            Ok(c) => {
                for m in c.greeting() {
                    self.send(&m);
                }
                self.conn = Some(c);
            }
            Err(e) => {
                warn!(room = %self.room, error = %e, "collab: cannot open the room's document");
                self.close(&Close::new(1011, "document unavailable"));
            }
        }
    }

    /// A data-channel message from the participant.
    pub async fn data(&mut self, d: &[u8]) {
        if self.closed {
            return;
        }
        if self.conn.is_none() {
            // A resumed signaling session: the channel was open before it.
            self.open().await;
        }
        let Some((&kind, body)) = d.split_first() else {
            return self.close(&Close::new(CLOSE_MALFORMED, "empty data-channel message"));
        };
        let limit = self.collab.settings().max_message_bytes;
        let whole = match kind {
            WHOLE if self.partial.is_empty() => body.to_vec(),
            MORE | LAST => {
                if self.partial.len() + body.len() > limit {
                    return self.close(&Close::new(
                        CLOSE_TOO_BIG,
                        format!("chunked message over the {limit} byte limit"),
                    ));
                }
                self.partial.extend_from_slice(body);
                if kind == MORE {
                    return;
                }
                std::mem::take(&mut self.partial)
            }
            _ => return self.close(&Close::new(CLOSE_MALFORMED, "bad chunk header")),
        };
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match conn.handle_on_runtime(&whole) {
            Ok(replies) => {
                for m in replies {
                    self.send(&m);
                }
            }
            Err(c) => self.close(&c),
        }
    }

    /// The next broadcast for this participant; never resolves while there is no link.
    pub async fn next(&mut self) -> Out {
        match self.conn.as_mut() {
            Some(c) => match c.recv().await {
                Some(o) => o,
                None => Out::Close(Close::new(1011, "room closed")),
            },
            None => std::future::pending().await,
        }
    }

    pub fn deliver(&mut self, out: Out) {
        match out {
            Out::Msg(m) => self.send(&m),
            Out::Close(c) => self.close(&c),
        }
    }

    fn send(&self, m: &Bytes) {
        if m.len() <= CHUNK {
            let mut v = Vec::with_capacity(m.len() + 1);
            v.push(WHOLE);
            v.extend_from_slice(m);
            let _ = self.sfu.app_send(self.pid, v);
            return;
        }
        let n = m.len().div_ceil(CHUNK);
        for (i, c) in m.chunks(CHUNK).enumerate() {
            let mut v = Vec::with_capacity(c.len() + 1);
            v.push(if i + 1 == n { LAST } else { MORE });
            v.extend_from_slice(c);
            let _ = self.sfu.app_send(self.pid, v);
        }
    }

    fn close(&mut self, c: &Close) {
        let mut v = vec![CLOSED];
        v.extend_from_slice(format!("{} {}", c.code, c.reason).as_bytes());
        let _ = self.sfu.app_send(self.pid, v);
        self.conn = None;
        self.partial.clear();
        self.closed = true;
    }
}
