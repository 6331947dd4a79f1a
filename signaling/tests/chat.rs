//! Room chat history without a transport: bounded on disk and in memory, numbers that go on
//! across restarts, torn lines skipped, resume points older than the history flagged.

use signaling::chat::{Chat, ChatSettings};

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("aula-chat-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test]
async fn history_is_bounded_and_numbers_go_on_after_a_restart() {
    let d = dir("bounded");
    let settings = ChatSettings {
        history: 10,
        backlog: 5,
        ..ChatSettings::default()
    };
    {
        let chat = Chat::new(d.clone(), settings.clone()).expect("chat");
        let room = chat.room("math").await.expect("room");
        for i in 0..25 {
            let m = room
                .send(&settings, "ana", 1, format!("m{i}"), Some(format!("id{i}")))
                .await
                .expect("send");
            assert_eq!(m.msg.seq, i + 1);
        }
        // A resend with an id already taken is answered with the stored message.
        let again = room
            .send(&settings, "ana", 1, "m24".into(), Some("id24".into()))
            .await
            .expect("resend");
        assert_eq!(again.msg.seq, 25);
        // The same id from someone else is a different message.
        let other = room
            .send(&settings, "ben", 2, "hi".into(), Some("id24".into()))
            .await
            .expect("send");
        assert_eq!(other.msg.seq, 26);
    }
    let lines = std::fs::read_to_string(d.join("math.jsonl"))
        .expect("history file")
        .lines()
        .count();
    assert!(lines <= 20, "the file is compacted ({lines} lines)");
    // A torn last line (a crash mid-append) is skipped.
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(d.join("math.jsonl"))
        .expect("open")
        .write_all(b"{\"seq\":27,\"ident")
        .expect("write");
    let chat = Chat::new(d.clone(), settings.clone()).expect("chat");
    let room = chat.room("math").await.expect("room");
    assert_eq!(room.last_seq(), 26);
    let newcomer = room.subscribe(None, settings.backlog);
    let got: Vec<u64> = newcomer.missed.iter().map(|m| m.msg.seq).collect();
    assert_eq!(got, vec![22, 23, 24, 25, 26], "a newcomer gets the backlog");
    let behind = room.subscribe(Some(3), settings.backlog);
    assert!(behind.truncated, "messages 4..16 are no longer kept");
    assert_eq!(behind.missed.first().map(|m| m.msg.seq), Some(17));
    let current = room.subscribe(Some(26), settings.backlog);
    assert!(current.missed.is_empty() && !current.truncated);
    let next = room
        .send(&settings, "ana", 1, "after".into(), None)
        .await
        .expect("send");
    assert_eq!(next.msg.seq, 27, "numbers go on after the torn line");
    let mut live = current.live;
    assert_eq!(live.recv().await.expect("live").msg.seq, 27);
    let refused = room.send(&settings, "ana", 1, String::new(), None).await;
    assert!(refused.is_err(), "an empty message is refused");
    drop((room, chat, live));
    let chat = Chat::new(d.clone(), settings.clone()).expect("chat");
    let room = chat.room("math").await.expect("room");
    assert_eq!(
        room.last_seq(),
        27,
        "the message after the torn line is kept"
    );
    drop((room, chat));
    let _ = std::fs::remove_dir_all(&d);
}
