//! Settings and error triage shared by aula's WebSocket endpoints (room signaling, collab,
//! teacher view).

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use futures_util::{SinkExt as _, StreamExt as _};

/// tungstenite zero-fills its whole read buffer before every read attempt (tungstenite-rs
/// issue #547), and a session polls its socket each time it writes: with the 128 KiB default
/// that memset was 23% of the server's CPU in the collab bench. Messages here are small; a
/// large one still arrives, in more reads.
const READ_BUFFER: usize = 8 * 1024;

/// WebSocket pings a client may send per second, and at once: each is answered with a pong.
pub const PINGS_PER_S: u32 = 5;
pub const PING_BURST: u32 = 50;

pub(crate) fn tuned(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.read_buffer_size(READ_BUFFER)
}

/// Whether a WebSocket error is the peer going away without a close handshake (a reset, a
/// dropped connection): routine for browsers and mobile networks, not worth a warning.
pub(crate) fn is_disconnect(e: &axum::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            );
        }
        // tungstenite's ProtocolError::ResetWithoutClosingHandshake (not a type we depend on).
        if err.to_string().contains("without closing handshake") {
            return true;
        }
        cur = err.source();
    }
    false
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;
type Stream = futures_util::stream::SplitStream<WebSocket>;

/// How long a room signaling client may take no bytes before its socket is closed.
pub const RTC_WRITE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A write that did not complete.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The connection is gone.
    Closed,
    /// The client took no bytes for the whole deadline.
    Stalled,
}

/// The sending half of a WebSocket with a write deadline. A client that stops reading (or
/// whose connection is half open) fills the socket's buffers, and a plain `send` then waits
/// forever, holding the session, its buffered messages and its file descriptor: here the
/// write fails after `deadline` and the session ends, which closes the socket.
pub(crate) struct Writer {
    sink: Sink,
    deadline: std::time::Duration,
}

impl Writer {
    pub(crate) fn new(sink: Sink, deadline: std::time::Duration) -> Writer {
        Writer { sink, deadline }
    }

    pub(crate) async fn send(&mut self, m: Message) -> Result<(), WriteError> {
        within(self.deadline, self.sink.send(m)).await
    }

    /// Queues `m` for the next `flush` (writes once the buffer is full).
    pub(crate) async fn feed(&mut self, m: Message) -> Result<(), WriteError> {
        within(self.deadline, self.sink.feed(m)).await
    }

    pub(crate) async fn flush(&mut self) -> Result<(), WriteError> {
        within(self.deadline, self.sink.flush()).await
    }

    pub(crate) async fn close(&mut self) -> Result<(), WriteError> {
        within(self.deadline, self.sink.close()).await
    }
}

/// A close frame with `reason` cut to the 123 bytes a close frame can carry (with the code, 125).
pub(crate) fn close_frame(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].to_string().into(),
    }))
}

async fn within<F>(deadline: std::time::Duration, op: F) -> Result<(), WriteError>
where
    F: std::future::Future<Output = Result<(), axum::Error>>,
{
    match tokio::time::timeout(deadline, op).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteError::Closed),
        Err(_) => {
            tracing::warn!(
                "websocket: the client took no data for {} s; closing it",
                deadline.as_secs()
            );
            Err(WriteError::Stalled)
        }
    }
}

/// Sends the close frame, then reads (and ignores) what the client still sends until it answers
/// the close: dropping the socket with unread data would reset the connection and the client
/// would see 1006 instead of the reason.
pub(crate) async fn close_and_drain(tx: &mut Writer, rx: &mut Stream, code: u16, reason: &str) {
    if tx.send(close_frame(code, reason)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
