//! Every message the server writes on a room WebSocket (`/rtc/{room}`) that does not come from
//! the SFU as a [`sfu::Signal`]: one typed enum, so the protocol is read in one place and a
//! field cannot drift between two hand-written JSON objects. Serialized as
//! `{"type": "<snake_case name>", ...fields}`, as the README's protocol section shows.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sfu::{ParticipantId, ParticipantInfo, TrackInfo};

use crate::token::Grants;

/// A raised hand (`hands.raised[]`), as sent and as the classroom keeps it on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hand {
    pub participant: u64,
    pub identity: String,
    /// When it was raised, milliseconds since the Unix epoch.
    pub at: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The first message of a new session.
    Joined {
        participant: ParticipantId,
        identity: String,
        room: String,
        grants: Grants,
        /// Reattaches this participant to a new socket within 10 s.
        resume: String,
        participants: Vec<ParticipantInfo>,
        tracks: Vec<TrackInfo>,
        ice_servers: serde_json::Value,
    },
    /// The first message of a resumed session.
    Resumed {
        participant: ParticipantId,
        identity: String,
        room: String,
        resume: String,
        participants: Vec<ParticipantInfo>,
        tracks: Vec<TrackInfo>,
        ice_servers: serde_json::Value,
    },
    /// The SFU's answer to the client's offer.
    Answer {
        sdp: String,
    },
    Pong,
    /// A client message refused; `id` echoes a chat message's own id.
    Error {
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
    /// Chat history sent up to `last`; `truncated`: older messages are no longer kept.
    ChatSynced {
        last: u64,
        truncated: bool,
    },
    /// A chat message is durable under number `seq`.
    ChatAck {
        id: serde_json::Value,
        seq: u64,
    },
    /// Raised hands, in the order raised.
    Hands {
        raised: Vec<Hand>,
    },
    /// A poll's question, options and totals so far.
    Poll {
        id: u64,
        question: String,
        options: Vec<String>,
        open: bool,
        totals: Vec<u64>,
        voters: u64,
    },
    PollCreated {
        id: u64,
    },
    VoteAck {
        poll: u64,
        option: usize,
    },
}

impl ServerMsg {
    pub fn error(message: impl Into<String>) -> ServerMsg {
        ServerMsg::Error {
            message: message.into(),
            id: None,
        }
    }

    /// The JSON text frame.
    pub fn text(&self) -> Arc<str> {
        // Plain structs of strings and numbers: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire shapes the pages and the README document.
    #[test]
    fn messages_serialize_with_their_type_and_fields() {
        let v = |m: ServerMsg| serde_json::from_str::<serde_json::Value>(&m.text()).expect("json");
        assert_eq!(v(ServerMsg::Pong), serde_json::json!({"type": "pong"}));
        assert_eq!(
            v(ServerMsg::error("no")),
            serde_json::json!({"type": "error", "message": "no"})
        );
        assert_eq!(
            v(ServerMsg::Error {
                message: "chat: x".into(),
                id: Some(serde_json::Value::Null)
            }),
            serde_json::json!({"type": "error", "message": "chat: x", "id": null})
        );
        assert_eq!(
            v(ServerMsg::ChatAck {
                id: "m1".into(),
                seq: 7
            }),
            serde_json::json!({"type": "chat_ack", "id": "m1", "seq": 7})
        );
        assert_eq!(
            v(ServerMsg::ChatSynced {
                last: 3,
                truncated: false
            }),
            serde_json::json!({"type": "chat_synced", "last": 3, "truncated": false})
        );
        assert_eq!(
            v(ServerMsg::VoteAck { poll: 1, option: 2 }),
            serde_json::json!({"type": "vote_ack", "poll": 1, "option": 2})
        );
        assert_eq!(
            v(ServerMsg::PollCreated { id: 4 }),
            serde_json::json!({"type": "poll_created", "id": 4})
        );
        let joined = v(ServerMsg::Joined {
            participant: ParticipantId(9),
            identity: "ana".into(),
            room: "math".into(),
            grants: Grants::default(),
            resume: "k".into(),
            participants: Vec::new(),
            tracks: Vec::new(),
            ice_servers: serde_json::json!([]),
        });
        assert_eq!(joined["type"], "joined");
        assert_eq!(joined["participant"], 9);
        assert_eq!(joined["grants"]["admin"], false);
    }
}
