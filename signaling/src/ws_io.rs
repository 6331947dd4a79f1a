//! Settings and error triage shared by aula's WebSocket endpoints (room signaling, collab,
//! teacher view).

use axum::extract::ws::WebSocketUpgrade;

/// tungstenite zero-fills its whole read buffer before every read attempt (tungstenite-rs
/// issue #547), and a session polls its socket each time it writes: with the 128 KiB default
/// that memset was 23% of the server's CPU in the collab bench. Messages here are small; a
/// large one still arrives, in more reads.
const READ_BUFFER: usize = 8 * 1024;

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
