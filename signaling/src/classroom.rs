//! Classroom tools over the room WebSocket: raised hands (in the order raised) and polls
//! (a moderator asks; each identity votes once; totals go out at most twice a second; closed
//! polls are kept in `{storage.dir}/classroom/{room}.polls.jsonl`). Moderators are tokens with
//! the `admin` grant.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::warn;

use crate::chat::now_ms;
use crate::server_msg::ServerMsg;

/// Poll totals go out at most this often, however fast votes arrive.
const RESULTS_EVERY: Duration = Duration::from_millis(500);
/// Closed polls a newcomer is sent.
const RECENT_CLOSED: usize = 5;
const MAX_QUESTION: usize = 500;
const MAX_OPTION: usize = 200;
const MAX_OPTIONS: usize = 10;
/// Open polls per room at once.
const MAX_OPEN: usize = 20;

#[derive(Clone)]
pub struct Classroom {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    rooms: Mutex<HashMap<String, Weak<ClassRoom>>>,
}

pub struct ClassRoom {
    name: String,
    path: PathBuf,
    state: Mutex<State>,
    events: broadcast::Sender<Arc<str>>,
}

#[derive(Default)]
struct State {
    hands: Vec<Hand>,
    polls: Vec<Poll>,
    next_poll: u64,
}

pub use crate::server_msg::Hand;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Poll {
    id: u64,
    question: String,
    options: Vec<String>,
    open: bool,
    totals: Vec<u64>,
    voters: u64,
    created_by: String,
    #[serde(skip)]
    voted: HashSet<String>,
    /// Votes since totals last went out.
    #[serde(skip)]
    dirty: bool,
}

impl Poll {
    fn message(&self) -> Arc<str> {
        ServerMsg::Poll {
            id: self.id,
            question: self.question.clone(),
            options: self.options.clone(),
            open: self.open,
            totals: self.totals.clone(),
            voters: self.voters,
        }
        .text()
    }
}

impl Classroom {
    pub fn new(dir: PathBuf) -> std::io::Result<Classroom> {
        fs::create_dir_all(&dir)?;
        Ok(Classroom {
            inner: Arc::new(Inner {
                dir,
                rooms: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The room's classroom state (closed polls loaded from disk when no session holds it).
    pub fn room(&self, room: &str) -> Arc<ClassRoom> {
        let mut rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = rooms.get(room).and_then(Weak::upgrade) {
            return r;
        }
        let path = self.inner.dir.join(format!("{room}.polls.jsonl"));
        let polls = load_polls(&path);
        let next_poll = polls.iter().map(|p| p.id).max().unwrap_or(0) + 1;
        let (events, _) = broadcast::channel(256);
        let r = Arc::new(ClassRoom {
            name: room.to_string(),
            path,
            state: Mutex::new(State {
                hands: Vec::new(),
                polls,
                next_poll,
            }),
            events,
        });
        rooms.retain(|_, w| w.strong_count() > 0);
        rooms.insert(room.to_string(), Arc::downgrade(&r));
        tokio::spawn(results_task(Arc::downgrade(&r)));
        r
    }
}

fn load_polls(path: &std::path::Path) -> Vec<Poll> {
    let Ok(f) = File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| match serde_json::from_str::<Poll>(&l) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "classroom: unreadable poll line skipped");
                None
            }
        })
        .collect()
}

/// Sends the totals of polls that got votes, at most every `RESULTS_EVERY`.
async fn results_task(room: Weak<ClassRoom>) {
    let mut tick = tokio::time::interval(RESULTS_EVERY);
    loop {
        tick.tick().await;
        let Some(r) = room.upgrade() else { break };
        let mut st = r.state.lock().unwrap_or_else(|p| p.into_inner());
        for p in st.polls.iter_mut().filter(|p| p.dirty) {
            p.dirty = false;
            let _ = r.events.send(p.message());
        }
    }
}

impl ClassRoom {
    fn hands_message(st: &State) -> Arc<str> {
        ServerMsg::Hands {
            raised: st.hands.clone(),
        }
        .text()
    }

    /// What a session is sent on joining: raised hands, open polls and recent closed ones.
    fn snapshot(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.events.subscribe();
        let mut out = vec![Self::hands_message(&st)];
        let closed: Vec<&Poll> = st.polls.iter().filter(|p| !p.open).collect();
        let recent = closed.len().saturating_sub(RECENT_CLOSED);
        out.extend(closed[recent..].iter().map(|p| p.message()));
        out.extend(st.polls.iter().filter(|p| p.open).map(|p| p.message()));
        (out, rx)
    }

    /// Raises or lowers `participant`'s hand; every session is told when it changed.
    pub fn hand(&self, participant: u64, identity: &str, raised: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let was = st.hands.iter().position(|h| h.participant == participant);
        match (raised, was) {
            (true, None) => st.hands.push(Hand {
                participant,
                identity: identity.to_string(),
                at: now_ms(),
            }),
            (false, Some(i)) => {
                st.hands.remove(i);
            }
            _ => return,
        }
        let _ = self.events.send(Self::hands_message(&st));
    }

    fn create(&self, by: &str, question: String, options: Vec<String>) -> Result<u64, String> {
        if question.trim().is_empty() || question.len() > MAX_QUESTION {
            return Err(format!("a poll question is 1 to {MAX_QUESTION} bytes"));
        }
        if options.len() < 2
            || options.len() > MAX_OPTIONS
            || options
                .iter()
                .any(|o| o.trim().is_empty() || o.len() > MAX_OPTION)
        {
            return Err(format!(
                "a poll has 2 to {MAX_OPTIONS} options of 1 to {MAX_OPTION} bytes"
            ));
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.polls.iter().filter(|p| p.open).count() >= MAX_OPEN {
            return Err(format!("{MAX_OPEN} polls are open in this room already"));
        }
        let id = st.next_poll;
        st.next_poll += 1;
        let p = Poll {
            id,
            question,
            totals: vec![0; options.len()],
            options,
            open: true,
            voters: 0,
            created_by: by.to_string(),
            voted: HashSet::new(),
            dirty: false,
        };
        let _ = self.events.send(p.message());
        st.polls.push(p);
        Ok(id)
    }

    fn vote(&self, identity: &str, poll: u64, option: usize) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let p = st
            .polls
            .iter_mut()
            .find(|p| p.id == poll)
            .ok_or_else(|| format!("no poll {poll} in this room"))?;
        if !p.open {
            return Err(format!("poll {poll} is closed"));
        }
        if option >= p.options.len() {
            return Err(format!("poll {poll} has {} options", p.options.len()));
        }
        if !p.voted.insert(identity.to_string()) {
            return Err(format!("{identity} already voted in poll {poll}"));
        }
        p.totals[option] += 1;
        p.voters += 1;
        p.dirty = true;
        Ok(())
    }

    /// Closes a poll: final totals to everyone, and the poll appended to the room's file.
    fn close(&self, poll: u64) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let p = st
            .polls
            .iter_mut()
            .find(|p| p.id == poll && p.open)
            .ok_or_else(|| format!("no open poll {poll} in this room"))?;
        p.open = false;
        p.dirty = false;
        let line = serde_json::to_string(&*p).map_err(|e| e.to_string())?;
        let msg = p.message();
        // Closed polls are rare: written and synced here, under the lock, in order.
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| {
                f.write_all(format!("{line}\n").as_bytes())?;
                f.sync_data()
            });
        if let Err(e) = written {
            warn!(room = %self.name, error = %e, "classroom: poll results not stored");
        }
        let _ = self.events.send(msg);
        Ok(())
    }
}

/// A client's classroom message on the room WebSocket.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClassMsg {
    /// Raise or lower one's hand; a moderator may lower someone else's (`participant`).
    Hand {
        raised: bool,
        #[serde(default)]
        participant: Option<u64>,
    },
    PollCreate {
        question: String,
        options: Vec<String>,
    },
    Vote {
        poll: u64,
        option: usize,
    },
    PollClose {
        poll: u64,
    },
}

/// One room session's side of the classroom.
pub struct ClassSession {
    room: Arc<ClassRoom>,
    events: broadcast::Receiver<Arc<str>>,
    participant: u64,
    identity: String,
    moderator: bool,
    can_vote: bool,
}

impl ClassSession {
    /// Joins; returns the session and what to send first (`hands`, then polls).
    pub fn open(
        c: &Classroom,
        room: &str,
        participant: u64,
        identity: &str,
        moderator: bool,
        can_vote: bool,
    ) -> (ClassSession, Vec<Arc<str>>) {
        let r = c.room(room);
        let (first, events) = r.snapshot();
        (
            ClassSession {
                room: r,
                events,
                participant,
                identity: identity.to_string(),
                moderator,
                can_vote,
            },
            first,
        )
    }

    /// The next event for this session (a lagging session gets the current hands again).
    pub async fn next(&mut self) -> Arc<str> {
        loop {
            match self.events.recv().await {
                Ok(m) => return m,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let st = self.room.state.lock().unwrap_or_else(|p| p.into_inner());
                    return ClassRoom::hands_message(&st);
                }
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }

    /// Handles a message: the reply (`{"type":"error",...}` when refused).
    pub fn handle(&mut self, msg: ClassMsg) -> Option<ServerMsg> {
        let refuse = |m: String| Some(ServerMsg::error(m));
        let moderator_only = |what: &str| {
            refuse(format!(
                "{what} is for moderators (a token with the admin grant)"
            ))
        };
        match msg {
            ClassMsg::Hand {
                raised,
                participant,
            } => match participant {
                Some(p) if p != self.participant => {
                    if !self.moderator || raised {
                        return moderator_only("lowering another participant's hand");
                    }
                    self.room.hand(p, "", false);
                    None
                }
                _ => {
                    self.room.hand(self.participant, &self.identity, raised);
                    None
                }
            },
            ClassMsg::PollCreate { question, options } => {
                if !self.moderator {
                    return moderator_only("creating a poll");
                }
                match self.room.create(&self.identity, question, options) {
                    Ok(id) => Some(ServerMsg::PollCreated { id }),
                    Err(e) => refuse(e),
                }
            }
            ClassMsg::Vote { poll, option } => {
                if !self.can_vote {
                    return refuse("this token may not vote (no publish_data grant)".into());
                }
                match self.room.vote(&self.identity, poll, option) {
                    Ok(()) => Some(ServerMsg::VoteAck { poll, option }),
                    Err(e) => refuse(e),
                }
            }
            ClassMsg::PollClose { poll } => {
                if !self.moderator {
                    return moderator_only("closing a poll");
                }
                self.room.close(poll).err().and_then(refuse)
            }
        }
    }

    /// The participant left the room: its hand goes down.
    pub fn left(&self) {
        self.room.hand(self.participant, &self.identity, false);
    }
}
