//! The collaboration service: one `yrs` document per room, spoken to with the y-protocols (sync
//! step 1/2, updates, awareness) by any transport (`signaling`'s adapters: a
//! y-websocket-compatible WebSocket, a room client's `yjs` data channel, the teacher view). Every update is in the shared journal (`journal.rs`: one fsync per group of
//! updates from all rooms) and the room's log before it is broadcast;
//! snapshots compact the log off the edit path; rooms without clients unload and reload from
//! disk. Per-client limits close abusive connections with clear close codes; a client whose
//! queue fills is dropped (it resyncs on reconnect) instead of slowing the room.

#![deny(unsafe_code)]

mod journal;
pub mod rate;
mod remote;
mod store;

pub use remote::{BoxFuture, SnapshotStore, SnapshotStoreError};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};
use yrs::sync::{Awareness, AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, ReadTxn, StateVector, Transact, Update};

use bytes::Bytes;
use journal::{Journal, SharedStore};
use store::DocStore;

/// `[collab]` in aula.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollabSettings {
    /// Largest y-protocols message a client may send (bytes).
    pub max_message_bytes: usize,
    /// Messages per second a client may send, sustained (`burst` above it briefly).
    pub rate_per_s: u32,
    pub burst: u32,
    /// Awareness (presence, cursors) not renewed for this long is removed.
    pub awareness_timeout_s: u64,
    /// Updates between snapshots.
    pub snapshot_every: usize,
    /// Messages queued for one client before it counts as too slow and is dropped.
    pub client_queue: usize,
    /// Bytes queued for one client before it counts as too slow (a few large messages fill
    /// it long before `client_queue` messages do).
    pub client_queue_bytes: usize,
    /// A room with no clients for this long is unloaded from memory.
    pub unload_after_s: u64,
    /// Document work (applying a client's updates, encoding its sync answers) a client may
    /// cause per second, sustained, and at once, in milliseconds of server time.
    pub work_ms_per_s: u32,
    pub work_burst_ms: u32,
    /// The teacher view's flush interval: student work is merged and sent at most this often.
    pub teacher_interval_ms: u64,
    /// Bytes of updates a document may hold pending (waiting for edits the server never
    /// received). Past it the pending part is dropped and its sender closed (4400): it can
    /// never be integrated, yet every newcomer would be sent it.
    pub max_pending_bytes: usize,
    /// WebSocket connections one document may have, and one identity to one document (a few
    /// tabs): past either, `/collab` answers 429 before the upgrade.
    pub max_clients_per_doc: usize,
    pub max_clients_per_identity: usize,
    /// A WebSocket client that completes no message (a pong counts) for this long is closed
    /// (4408): a half-open connection, or one holding an unfinished frame in server memory.
    /// The server pings every third of it.
    pub idle_timeout_s: u64,
}

impl Default for CollabSettings {
    fn default() -> Self {
        CollabSettings {
            max_message_bytes: 1 << 20,
            rate_per_s: 100,
            burst: 300,
            work_ms_per_s: 200,
            work_burst_ms: 2000,
            awareness_timeout_s: 30,
            snapshot_every: 1000,
            client_queue: 1024,
            client_queue_bytes: 16 << 20,
            unload_after_s: 10,
            teacher_interval_ms: 500,
            max_pending_bytes: 1 << 20,
            max_clients_per_doc: 5000,
            max_clients_per_identity: 16,
            idle_timeout_s: 60,
        }
    }
}

impl CollabSettings {
    pub fn check(&self) -> Result<(), String> {
        if self.max_message_bytes < 1024 {
            return Err("collab.max_message_bytes must be at least 1024".into());
        }
        if self.rate_per_s == 0 || self.burst < self.rate_per_s {
            return Err("collab.rate_per_s must be > 0 and collab.burst >= rate_per_s".into());
        }
        if self.awareness_timeout_s == 0 || self.snapshot_every == 0 || self.client_queue < 16 {
            return Err(
                "collab.awareness_timeout_s and snapshot_every must be > 0, client_queue >= 16"
                    .into(),
            );
        }
        if self.max_clients_per_doc == 0
            || self.max_clients_per_identity == 0
            || self.idle_timeout_s < 3
        {
            return Err("collab.max_clients_per_doc and max_clients_per_identity must be > 0, idle_timeout_s >= 3".into());
        }
        if self.client_queue_bytes < 2 * self.max_message_bytes {
            return Err(
                "collab.client_queue_bytes must be at least twice collab.max_message_bytes".into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum CollabError {
    #[error("collab storage for room {0}: {1}")]
    Storage(String, std::io::Error),
    #[error("stored document of room {0} is unreadable: {1}")]
    Corrupt(String, String),
    #[error("snapshot of room {0} in object storage unavailable: {1}")]
    Remote(String, String),
}

/// Why the server closes a client: a WebSocket close code and a reason it can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

impl Close {
    pub fn new(code: u16, reason: impl Into<String>) -> Close {
        Close {
            code,
            reason: reason.into(),
        }
    }
}

/// Sent (as a y-protocols auth "permission denied") to a read-only client that edits.
pub const READ_ONLY: &str =
    "permission denied: this token may read the document but not edit it (no publish_data grant)";

/// Close codes (4000-4999 are the application's).
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_MALFORMED: u16 = 4400;
pub const CLOSE_TOO_SLOW: u16 = 4408;
pub const CLOSE_RATE: u16 = 4429;

/// What a connection is sent.
pub enum Out {
    Msg(Bytes),
    Close(Close),
}

#[derive(Clone)]
pub struct Collab {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    settings: CollabSettings,
    rooms: tokio::sync::Mutex<HashMap<String, Arc<Document>>>,
    /// One lock per document being loaded: a load (which may wait on S3) holds only its own
    /// document's, never `rooms`, so joins to other documents go on meanwhile.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    next_conn: AtomicU64,
    metrics: Metrics,
    /// Teacher views: updates of every document named `{prefix}...` after they are durable.
    watchers: Mutex<Vec<Watcher>>,
    /// Object storage (S3/R2) keeping each document's latest snapshot, so a document outlives
    /// the node's disk: written after every local snapshot and when the document unloads,
    /// read when a document has nothing on local disk.
    remote: Option<Arc<dyn SnapshotStore>>,
    journal: Journal,
    /// Updates applied in memory and not yet committed to the journal by their room's log
    /// task: `flush` waits for them, so a clean stop loses none.
    unlogged: AtomicUsize,
    /// WebSocket connections per document and per (document, identity).
    seats: Mutex<HashMap<(String, Option<String>), usize>>,
}

/// A WebSocket client's place in the connection counts; given back when dropped.
pub struct Seat {
    inner: Arc<Inner>,
    doc: String,
    identity: String,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Ok(mut m) = self.inner.seats.lock() {
            for key in [
                (self.doc.clone(), None),
                (self.doc.clone(), Some(self.identity.clone())),
            ] {
                if let Some(n) = m.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&key);
                    }
                }
            }
        }
    }
}

fn remote_key(doc: &str) -> String {
    format!("collab/{doc}/snapshot.bin")
}

pub struct Watcher {
    pub prefix: String,
    pub tx: mpsc::Sender<(Arc<str>, Bytes)>,
    /// Set when its queue overflowed: it must start over from full states.
    pub lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Metrics {
    updates: AtomicU64,
    closed_slow: AtomicU64,
    closed_bad: AtomicU64,
    readonly_dropped: AtomicU64,
    remote_snapshots: AtomicU64,
    /// Pending updates dropped: over `max_pending_bytes`, or not encodable.
    pending_dropped: AtomicU64,
    /// Documents in memory: counted apart from the table so `/metrics` never waits on it
    /// (nor reads 0 while a join holds it).
    documents: AtomicU64,
}

struct Document {
    name: String,
    /// The same name, shared with watchers without a copy per update.
    shared_name: Arc<str>,
    state: Mutex<RoomState>,
    /// Updates on their way to the log, then to the other clients.
    log: mpsc::UnboundedSender<Logged>,
}

struct RoomState {
    awareness: Awareness,
    clients: HashMap<u64, Slot>,
    /// When each awareness client last renewed its state.
    seen: HashMap<ClientID, Instant>,
    /// Which connection set each awareness client id: only it may change or remove it.
    owners: HashMap<ClientID, u64>,
    updates_since_snapshot: usize,
    /// Bytes of the updates applied since the document last had nothing pending (an
    /// upper bound of what yrs keeps pending, known without encoding it).
    pending_bytes: usize,
}

struct Slot {
    tx: mpsc::Sender<Queued>,
    kicked: Arc<(AtomicBool, Notify)>,
    awareness_ids: HashSet<ClientID>,
    /// Bytes in `tx` not yet taken by the client.
    queued: Arc<AtomicUsize>,
}

struct Logged {
    from: u64,
    update: Bytes,
}

/// A message in a client's queue; document updates carry their broadcast's ticket.
struct Queued {
    msg: Bytes,
    ticket: Option<Arc<Ticket>>,
}

/// How many clients have not yet taken a broadcast from their queue, and how long most took.
/// A room sends its next batch once most have taken the previous one and `PACE_FACTOR` times
/// that drain time has passed (at most `PACE_MAX_WAIT`): when the machine is busy, writers
/// run late, the room waits longer, and the updates meanwhile go out as one merged message, so
/// the work per update falls as load rises; when it is idle, writers take a broadcast within
/// microseconds and the pace is well under a millisecond. (bench/collab, 50 rooms x 30
/// editors x 7.5/s, 3 runs each: p50 40-62 ms without the pace, 30-34 ms with it; 10 x 30 x 5/s:
/// p50 1.2 -> 4.3 ms.)
struct Ticket {
    sent: Instant,
    /// Microseconds from `sent` until `enough` was reached (0 while not yet).
    drained_us: AtomicU64,
    left: AtomicUsize,
    /// `left` at or below which the room may send again: stragglers do not hold it.
    enough: usize,
    done: Notify,
}

/// The longest a room holds a batch for clients that have not taken the previous one.
const PACE_MAX_WAIT: Duration = Duration::from_millis(50);
const PACE_FACTOR: u32 = 8;

impl Ticket {
    fn new(recipients: usize) -> Arc<Ticket> {
        let enough = if recipients >= 2 {
            (recipients / 10).max(1)
        } else {
            0
        };
        Arc::new(Ticket {
            sent: Instant::now(),
            drained_us: AtomicU64::new(0),
            left: AtomicUsize::new(recipients),
            enough,
            done: Notify::new(),
        })
    }

    fn taken(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == self.enough + 1 {
            let us = self.sent.elapsed().as_micros().max(1) as u64;
            self.drained_us.store(us, Ordering::Relaxed);
            self.done.notify_one();
        }
    }

    async fn wait(&self) {
        let _ = tokio::time::timeout(PACE_MAX_WAIT, async {
            while self.left.load(Ordering::Acquire) > self.enough {
                self.done.notified().await;
            }
        })
        .await;
        let drained = Duration::from_micros(self.drained_us.load(Ordering::Relaxed));
        let until = self.sent + (drained * PACE_FACTOR).min(PACE_MAX_WAIT);
        tokio::time::sleep_until(until.into()).await;
    }
}

/// One client's connection to a room's document.
pub struct Conn {
    room: Arc<Document>,
    service: Arc<Inner>,
    id: u64,
    rx: mpsc::Receiver<Queued>,
    kicked: Arc<(AtomicBool, Notify)>,
    /// Bytes queued for this client (its slot's counter).
    queued: Arc<AtomicUsize>,
    can_write: bool,
    rate: rate::TokenBucket,
    /// Server time this client's messages cost, in milliseconds.
    work: rate::TokenBucket,
    warned_readonly: bool,
}

impl Collab {
    /// Documents live under `dir/{room}/`, the journal in `dir/.journal/` (a name no room can
    /// have). What a previous run left in the journal is replayed first.
    pub fn new(dir: PathBuf, settings: CollabSettings) -> Result<Collab, CollabError> {
        Collab::with_remote(dir, settings, None)
    }

    /// As `new`, with snapshots also kept in object storage (S3/R2).
    pub fn with_remote(
        dir: PathBuf,
        settings: CollabSettings,
        remote: Option<Arc<dyn SnapshotStore>>,
    ) -> Result<Collab, CollabError> {
        let journal = Journal::open(&dir.join(".journal"), &dir)
            .map_err(|e| CollabError::Storage("(journal)".into(), e))?;
        Ok(Collab {
            inner: Arc::new(Inner {
                journal,
                unlogged: AtomicUsize::new(0),
                seats: Mutex::new(HashMap::new()),
                dir,
                settings,
                rooms: tokio::sync::Mutex::new(HashMap::new()),
                loading: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                metrics: Metrics::default(),
                watchers: Mutex::new(Vec::new()),
                remote,
            }),
        })
    }

    pub fn settings(&self) -> &CollabSettings {
        &self.inner.settings
    }

    /// Takes a WebSocket seat on `doc` for `identity`, or says which cap is full.
    pub fn seat(&self, doc: &str, identity: &str) -> Result<Seat, String> {
        let s = &self.inner.settings;
        let mut m = self
            .inner
            .seats
            .lock()
            .map_err(|_| "collab seats lock poisoned".to_string())?;
        let all = (doc.to_string(), None);
        let mine = (doc.to_string(), Some(identity.to_string()));
        if m.get(&all).copied().unwrap_or(0) >= s.max_clients_per_doc {
            return Err(format!(
                "document {doc} has {} connections (collab.max_clients_per_doc)",
                s.max_clients_per_doc
            ));
        }
        if m.get(&mine).copied().unwrap_or(0) >= s.max_clients_per_identity {
            return Err(format!(
                "{identity} has {} connections to document {doc} (collab.max_clients_per_identity)",
                s.max_clients_per_identity
            ));
        }
        *m.entry(all).or_default() += 1;
        *m.entry(mine).or_default() += 1;
        Ok(Seat {
            inner: self.inner.clone(),
            doc: doc.to_string(),
            identity: identity.to_string(),
        })
    }

    /// For a clean stop: every acknowledged update synced into its document's log and the
    /// journal emptied, so the next start has nothing to replay.
    pub async fn flush(&self) {
        while self.inner.unlogged.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.inner.journal.flush().await;
    }

    /// Joins `room` (loading its document if it is not in memory).
    pub async fn join(&self, room: &str, can_write: bool) -> Result<Conn, CollabError> {
        let r = match self.loaded(room).await {
            Some(r) => r,
            None => {
                let gate = {
                    let mut l = self
                        .inner
                        .loading
                        .lock()
                        .map_err(|_| CollabError::Corrupt(room.into(), "load table".into()))?;
                    l.entry(room.to_string()).or_default().clone()
                };
                let _loading = gate.lock().await;
                // Another join may have loaded it while this one waited for the gate.
                let r = match self.loaded(room).await {
                    Some(r) => Ok(r),
                    None => match self.load(room).await {
                        Ok(r) => {
                            let mut rooms = self.inner.rooms.lock().await;
                            if rooms.insert(room.to_string(), r.clone()).is_none() {
                                self.inner.metrics.documents.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r)
                        }
                        Err(e) => Err(e),
                    },
                };
                if let Ok(mut l) = self.inner.loading.lock() {
                    l.remove(room);
                }
                r?
            }
        };
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.inner.settings.client_queue);
        let kicked = Arc::new((AtomicBool::new(false), Notify::new()));
        let queued = Arc::new(AtomicUsize::new(0));
        if let Ok(mut st) = r.state.lock() {
            st.clients.insert(
                id,
                Slot {
                    tx,
                    kicked: kicked.clone(),
                    awareness_ids: HashSet::new(),
                    queued: queued.clone(),
                },
            );
        }
        Ok(Conn {
            room: r,
            service: self.inner.clone(),
            id,
            rx,
            kicked,
            queued,
            can_write,
            rate: rate::TokenBucket::new(
                self.inner.settings.rate_per_s,
                self.inner.settings.burst,
                Instant::now(),
            ),
            work: rate::TokenBucket::new(
                self.inner.settings.work_ms_per_s,
                self.inner.settings.work_burst_ms,
                Instant::now(),
            ),
            warned_readonly: false,
        })
    }

    /// The document in memory, unless absent or poisoned: a panic under its lock (a bug, since
    /// client bytes are handled guarded) leaves its state unusable, and the next join reloads
    /// it from its log rather than refuse everyone.
    async fn loaded(&self, room: &str) -> Option<Arc<Document>> {
        let rooms = self.inner.rooms.lock().await;
        let r = rooms.get(room)?;
        if r.state.is_poisoned() {
            warn!(
                room,
                "collab: room state poisoned; reloading it from its log"
            );
            return None;
        }
        Some(r.clone())
    }

    async fn load(&self, room: &str) -> Result<Arc<Document>, CollabError> {
        let dir = self.inner.dir.join(room);
        let name = room.to_string();
        let opened = {
            let (dir, name) = (dir.clone(), name.clone());
            tokio::task::spawn_blocking(move || {
                DocStore::open(&dir).map_err(|e| CollabError::Storage(name, e))
            })
            .await
            .map_err(|e| CollabError::Corrupt(room.to_string(), e.to_string()))??
        };
        let (store, mut loaded) = opened;
        let mut restored = None;
        if loaded.snapshot.is_none() && loaded.updates.is_empty() {
            if let Some(r) = &self.inner.remote {
                // An error here must not start the document empty: its next snapshot would
                // overwrite the stored one.
                restored = r
                    .get(&remote_key(room))
                    .await
                    .map_err(|e| CollabError::Remote(room.to_string(), e.to_string()))?;
                if restored.is_some() {
                    info!(room, "collab document restored from object storage");
                }
            }
        }
        let max_pending = self.inner.settings.max_pending_bytes;
        let (store, awareness, pending_bytes) = tokio::task::spawn_blocking(move || {
            if let Some(state) = restored {
                // Local from now on: the log continues after this snapshot.
                store::write_snapshot(store.dir(), store.seq(), &state)
                    .map_err(|e| CollabError::Storage(name.clone(), e))?;
                loaded.snapshot = Some(state);
            }
            let doc = yrs::Doc::new();
            let mut pending_bytes = 0;
            {
                let mut txn = doc.transact_mut();
                for u in loaded.snapshot.iter().chain(loaded.updates.iter()) {
                    let u = Update::decode_v1(u)
                        .map_err(|e| CollabError::Corrupt(name.clone(), e.to_string()))?;
                    txn.apply_update(u)
                        .map_err(|e| CollabError::Corrupt(name.clone(), e.to_string()))?;
                }
                if txn.has_missing_updates() {
                    // At most what was replayed: a bound, known without encoding it.
                    pending_bytes = loaded.snapshot.iter().chain(loaded.updates.iter()).map(|u| u.len()).sum();
                    if pending_bytes > max_pending {
                        use yrs::WriteTxn as _;
                        txn.prune_pending();
                        pending_bytes = 0;
                        warn!(room = %name, "collab: stored updates left more than collab.max_pending_bytes pending; dropped them");
                    }
                }
            }
            Ok::<_, CollabError>((store, Awareness::new(doc), pending_bytes))
        })
        .await
        .map_err(|e| CollabError::Corrupt(room.to_string(), e.to_string()))??;
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let r = Arc::new(Document {
            name: room.to_string(),
            shared_name: Arc::from(room),
            state: Mutex::new(RoomState {
                awareness,
                clients: HashMap::new(),
                seen: HashMap::new(),
                owners: HashMap::new(),
                updates_since_snapshot: 0,
                pending_bytes,
            }),
            log: log_tx,
        });
        info!(room, "collab document loaded");
        tokio::spawn(log_task(
            Arc::downgrade(&r),
            r.shared_name.clone(),
            self.inner.clone(),
            Arc::new(Mutex::new(store)),
            log_rx,
        ));
        tokio::spawn(expire_task(
            self.inner.clone(),
            Arc::downgrade(&r),
            Duration::from_secs(self.inner.settings.awareness_timeout_s),
        ));
        Ok(r)
    }

    /// Rooms in memory and connected clients.
    pub fn render_metrics(&self, out: &mut String) {
        let m = &self.inner.metrics;
        let mut x = metrics_text::Exposition::new(out);
        x.gauge("aula_collab_documents", m.documents.load(Ordering::Relaxed));
        // The same figure under its old name, kept for one release (dashboards may read it).
        x.gauge("aula_collab_rooms", m.documents.load(Ordering::Relaxed));
        for (name, v) in [
            ("aula_collab_updates_total", &m.updates),
            ("aula_collab_closed_slow_total", &m.closed_slow),
            ("aula_collab_closed_bad_total", &m.closed_bad),
            ("aula_collab_readonly_dropped_total", &m.readonly_dropped),
            ("aula_collab_remote_snapshots_total", &m.remote_snapshots),
            ("aula_collab_pending_dropped_total", &m.pending_dropped),
            (
                "aula_collab_journal_syncs_total",
                &*self.inner.journal.syncs,
            ),
        ] {
            x.counter(name, v.load(Ordering::Relaxed));
        }
    }
}

/// Messages at least this large are handled with `block_in_place`: their integration may take
/// long, and the runtime then moves this worker's other tasks (other documents' clients) to
/// another thread meanwhile. Small ones are cheap and skip the hand-off.
const LARGE_MESSAGE: usize = 4096;

impl Conn {
    /// `handle` for a message from a transport task on the runtime.
    pub fn handle_on_runtime(&mut self, data: &[u8]) -> Result<Vec<Bytes>, Close> {
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi && data.len() >= LARGE_MESSAGE {
            tokio::task::block_in_place(|| self.handle(data))
        } else {
            self.handle(data)
        }
    }
}

/// Runs a yrs decoder or apply on client bytes. yrs 0.28 asserts on some malformed input (a
/// client id with reserved bits set panics in `read_id`; found by signaling/tests/collab.rs):
/// such a panic is the client's error, not the server's.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "invalid encoding".into())),
    }
}

/// The document's state after `sv`, as one update. Guarded: yrs re-encodes and re-decodes its
/// pending structs here (`merge_pending_v1` unwraps), and those came from clients
/// (signaling/tests/collab.rs hit an add overflow there once in ~30 runs before `check_clocks`,
/// and a failed merge once in CI after it). Pending structs can never be integrated, so when
/// they cannot be encoded they are dropped and the integrated document is sent: a newcomer
/// must never be refused the document because of them.
fn state_since(
    service: &Inner,
    room: &str,
    doc: &yrs::Doc,
    sv: &StateVector,
) -> Result<Vec<u8>, String> {
    let first = guarded(|| Ok(doc.transact().encode_state_as_update_v1(sv)));
    let Err(e) = first else { return first };
    let dropped = guarded(|| {
        use yrs::WriteTxn as _;
        Ok(doc.transact_mut().prune_pending().is_some())
    })?;
    if !dropped {
        return Err(e);
    }
    service
        .metrics
        .pending_dropped
        .fetch_add(1, Ordering::Relaxed);
    warn!(room, error = %e, "collab: pending updates cannot be encoded; dropped them");
    guarded(|| Ok(doc.transact().encode_state_as_update_v1(sv)))
}

/// The highest clock an accepted update may reach. Real clients count inserted elements from 0;
/// a clock near `u32::MAX` can only be hostile, and yrs overflows on it when it later merges
/// pending updates.
const MAX_CLOCK: u32 = 1 << 31;

/// Client ids one connection may hold presence for (a y-websocket connection carries one
/// document and so one client id; a few to spare for a page that recreates its Y.Doc).
const MAX_AWARENESS_IDS: usize = 4;

/// Bytes of one client's awareness state (JSON).
const MAX_AWARENESS_STATE: usize = 64 << 10;

/// Distinct client ids one update may carry. A live edit carries one; a client back from
/// offline carries those whose edits it saw. Thousands of synthetic ids are an attack shape
/// (issue 13: 15,000 ids inserting at one position cost 22 s of integration).
const MAX_UPDATE_CLIENTS: usize = 2_000;

/// Refuses updates whose insertions or deletions reach past `MAX_CLOCK`, or that carry more
/// than `MAX_UPDATE_CLIENTS` client ids.
fn check_clocks(u: &Update) -> Result<(), String> {
    let insertions = u.insertions(true);
    let clients = insertions
        .iter()
        .map(|(c, _)| *c)
        .chain(u.delete_set().iter().map(|(c, _)| *c))
        .collect::<HashSet<_>>()
        .len();
    if clients > MAX_UPDATE_CLIENTS {
        return Err(format!(
            "{clients} client ids in one update (at most {MAX_UPDATE_CLIENTS})"
        ));
    }
    for set in [&insertions, u.delete_set()] {
        for (client, ranges) in set.iter() {
            for r in ranges.iter() {
                if r.end < r.start || r.end > MAX_CLOCK {
                    return Err(format!(
                        "client {client} clock range {}..{} is out of bounds",
                        r.start, r.end
                    ));
                }
            }
        }
    }
    Ok(())
}

fn encode(msg: &Message) -> Bytes {
    Bytes::from(msg.encode_v1())
}

/// The y-sync update message carrying `update`, built with one copy.
fn update_message(update: &[u8]) -> Bytes {
    use yrs::encoding::write::Write as _;
    let mut out = Vec::with_capacity(update.len() + 8);
    out.write_var(0u32); // messageSync
    out.write_var(2u32); // messageYjsUpdate
    out.write_buf(update);
    Bytes::from(out)
}

impl Conn {
    /// What a new client is sent first: the server's sync step 1 and everyone's awareness (as
    /// separate messages: y-websocket reads one message per frame).
    pub fn greeting(&self) -> Vec<Bytes> {
        let Ok(st) = self.room.state.lock() else {
            return Vec::new();
        };
        let sv = st.awareness.doc().transact().state_vector();
        let mut out = vec![encode(&Message::Sync(SyncMessage::SyncStep1(sv)))];
        if let Ok(u) = st.awareness.update() {
            if !u.clients.is_empty() {
                out.push(encode(&Message::Awareness(u)));
            }
        }
        out
    }

    /// Handles one message from the client; returns the replies for it alone.
    pub fn handle(&mut self, data: &[u8]) -> Result<Vec<Bytes>, Close> {
        // What a message cost is known only once it is handled: charged to its sender then,
        // so a client whose updates are costly to integrate is closed before it starves the
        // room (the rate limit counts messages, not work).
        let started = Instant::now();
        let out = self.handle_one(data)?;
        let spent = started.elapsed();
        if !self
            .work
            .charge(Instant::now(), spent.as_secs_f64() * 1000.0)
        {
            let s = &self.service.settings;
            return Err(self.bad(Close::new(
                CLOSE_RATE,
                format!(
                    "over the work budget of {} ms per second ({} ms burst): the last message took {} ms",
                    s.work_ms_per_s,
                    s.work_burst_ms,
                    spent.as_millis()
                ),
            )));
        }
        Ok(out)
    }

    fn handle_one(&mut self, data: &[u8]) -> Result<Vec<Bytes>, Close> {
        let s = &self.service.settings;
        if data.len() > s.max_message_bytes {
            return Err(self.bad(Close::new(
                CLOSE_TOO_BIG,
                format!(
                    "message of {} bytes is over the {} byte limit",
                    data.len(),
                    s.max_message_bytes
                ),
            )));
        }
        if !self.rate.take(Instant::now()) {
            return Err(self.bad(Close::new(
                CLOSE_RATE,
                format!("over {} messages per second", s.rate_per_s),
            )));
        }
        let msg = guarded(|| Message::decode_v1(data).map_err(|e| e.to_string())).map_err(|e| {
            self.bad(Close::new(
                CLOSE_MALFORMED,
                format!("malformed y-protocols message: {e}"),
            ))
        })?;
        match msg {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let st = self.lock()?;
                let diff = state_since(&self.service, &self.room.name, st.awareness.doc(), &sv).map_err(|e| {
                    warn!(room = %self.room.name, error = %e, "collab: cannot encode the document");
                    Close::new(1011, "the document cannot be encoded")
                })?;
                Ok(vec![encode(&Message::Sync(SyncMessage::SyncStep2(diff)))])
            }
            Message::Sync(SyncMessage::SyncStep2(u)) | Message::Sync(SyncMessage::Update(u)) => {
                if !self.can_write {
                    self.service
                        .metrics
                        .readonly_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    if !self.warned_readonly {
                        self.warned_readonly = true;
                        info!(room = %self.room.name, conn = self.id, "collab: update from a read-only client dropped");
                        // Told once, with y-protocols' own "permission denied" (y-websocket
                        // clients log it): its edits stay local.
                        return Ok(vec![encode(&Message::Auth(Some(READ_ONLY.into())))]);
                    }
                    return Ok(Vec::new());
                }
                self.apply(u)?;
                Ok(Vec::new())
            }
            Message::Awareness(u) => {
                self.awareness(u, data)?;
                Ok(Vec::new())
            }
            Message::AwarenessQuery => {
                let st = self.lock()?;
                Ok(st
                    .awareness
                    .update()
                    .ok()
                    .map(|u| vec![encode(&Message::Awareness(u))])
                    .unwrap_or_default())
            }
            // Auth is decided by the token at connect; other message types are not ours.
            Message::Auth(_) | Message::Custom(..) => Ok(Vec::new()),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, RoomState>, Close> {
        self.room
            .state
            .lock()
            .map_err(|_| Close::new(1011, "room state poisoned"))
    }

    fn bad(&self, c: Close) -> Close {
        self.service
            .metrics
            .closed_bad
            .fetch_add(1, Ordering::Relaxed);
        warn!(room = %self.room.name, conn = self.id, code = c.code, reason = %c.reason, "collab: closing a client");
        c
    }

    fn apply(&self, bytes: Vec<u8>) -> Result<(), Close> {
        let update = guarded(|| {
            let u = Update::decode_v1(&bytes).map_err(|e| e.to_string())?;
            check_clocks(&u)?;
            Ok(u)
        })
        .map_err(|e| {
            self.bad(Close::new(
                CLOSE_MALFORMED,
                format!("malformed document update: {e}"),
            ))
        })?;
        let mut st = self.lock()?;
        let mut txn = st.awareness.doc().transact_mut();
        guarded(|| txn.apply_update(update).map_err(|e| e.to_string())).map_err(|e| {
            self.bad(Close::new(
                CLOSE_MALFORMED,
                format!("document update refused: {e}"),
            ))
        })?;
        let pending = txn.has_missing_updates();
        let over =
            pending && st.pending_bytes + bytes.len() > self.service.settings.max_pending_bytes;
        if over {
            use yrs::WriteTxn as _;
            let _ = guarded(|| Ok(txn.prune_pending()));
        }
        drop(txn);
        let len = bytes.len();
        let update = if over {
            // What this update integrated must be logged and sent, its dropped pending part
            // must not (it would come back on reload and reach every client): the document as
            // it now is stands in for it, and the next batch takes a snapshot, so the journal
            // forgets the pending updates logged before.
            st.updates_since_snapshot = self.service.settings.snapshot_every;
            state_since(
                &self.service,
                &self.room.name,
                st.awareness.doc(),
                &StateVector::default(),
            )
            .map(Bytes::from)
            .map_err(|e| {
                warn!(room = %self.room.name, error = %e, "collab: cannot encode the document");
                Close::new(1011, "the document cannot be encoded")
            })?
        } else {
            Bytes::from(bytes)
        };
        // Sent while the room is locked: the log's order is the order applied.
        self.service.unlogged.fetch_add(1, Ordering::AcqRel);
        if self
            .room
            .log
            .send(Logged {
                from: self.id,
                update,
            })
            .is_err()
        {
            self.service.unlogged.fetch_sub(1, Ordering::AcqRel);
        }
        st.pending_bytes = if pending && !over {
            st.pending_bytes + len
        } else {
            0
        };
        if over {
            drop(st);
            self.service
                .metrics
                .pending_dropped
                .fetch_add(1, Ordering::Relaxed);
            let max = self.service.settings.max_pending_bytes;
            return Err(self.bad(Close::new(
                CLOSE_MALFORMED,
                format!(
                    "over {max} bytes of updates waiting for edits the server never received: dropped them"
                ),
            )));
        }
        Ok(())
    }

    fn awareness(&self, mut u: AwarenessUpdate, raw: &[u8]) -> Result<(), Close> {
        let mut st = self.lock()?;
        let server_id = st.awareness.doc().client_id();
        // Checked before yrs sees them: yrs adds 1 to a clock when a state is removed, and a
        // clock of u32::MAX then panics while the room is locked.
        if let Some((id, e)) = u
            .clients
            .iter()
            .find(|(id, e)| e.clock > MAX_CLOCK || **id == server_id)
        {
            return Err(self.bad(Close::new(
                CLOSE_MALFORMED,
                format!(
                    "awareness client {id} with clock {} is out of bounds",
                    e.clock
                ),
            )));
        }
        // Presence is kept and sent to every newcomer: a name, a colour and a cursor, not a file.
        if let Some((id, e)) = u
            .clients
            .iter()
            .find(|(_, e)| e.json.len() > MAX_AWARENESS_STATE)
        {
            return Err(self.bad(Close::new(
                CLOSE_TOO_BIG,
                format!(
                    "awareness state of client {id} is {} bytes (at most {MAX_AWARENESS_STATE})",
                    e.json.len()
                ),
            )));
        }
        // A connection speaks only for the client ids it set first. y-websocket clients relay
        // states they heard from others: those are dropped quietly, not refused.
        let before = u.clients.len();
        let conn = self.id;
        let owners = &st.owners;
        u.clients.retain(|id, e| match owners.get(id) {
            Some(owner) => *owner == conn,
            None => e.json.as_ref() != "null",
        });
        let claimed: Vec<ClientID> = u
            .clients
            .keys()
            .filter(|id| !st.owners.contains_key(id))
            .copied()
            .collect();
        // The ids this connection set are its slot's (only owned ids reach it): no scan of
        // every owner in the room on each cursor move.
        let owned = st
            .clients
            .get(&conn)
            .map_or(0, |slot| slot.awareness_ids.len());
        if owned + claimed.len() > MAX_AWARENESS_IDS {
            return Err(self.bad(Close::new(
                CLOSE_MALFORMED,
                format!("over {MAX_AWARENESS_IDS} awareness client ids on one connection"),
            )));
        }
        if u.clients.is_empty() {
            return Ok(());
        }
        let filtered = u.clients.len() < before;
        let ids: Vec<ClientID> = u.clients.keys().copied().collect();
        let out = if filtered {
            encode(&Message::Awareness(u.clone()))
        } else {
            Bytes::copy_from_slice(raw)
        };
        let awareness = &mut st.awareness;
        guarded(|| awareness.apply_update(u).map_err(|e| e.to_string())).map_err(|e| {
            self.bad(Close::new(
                CLOSE_MALFORMED,
                format!("awareness update refused: {e}"),
            ))
        })?;
        let now = Instant::now();
        for id in &ids {
            st.seen.insert(*id, now);
        }
        for id in &claimed {
            st.owners.insert(*id, conn);
        }
        if let Some(slot) = st.clients.get_mut(&self.id) {
            slot.awareness_ids.extend(ids);
        }
        // To everyone, the sender too (as the y-websocket server does: a lone client then still
        // hears from the server and does not reconnect after 30 s of silence).
        broadcast(&self.service, &mut st, None, out);
        Ok(())
    }

    /// A message already queued for this client, without waiting (a kicked client's close
    /// comes from `recv`).
    pub fn try_recv(&mut self) -> Option<Bytes> {
        if self.kicked.0.load(Ordering::Relaxed) {
            return None;
        }
        let q = self.rx.try_recv().ok()?;
        Some(take(q, &self.queued))
    }

    /// The next message for this client; `None` once the room let it go.
    pub async fn recv(&mut self) -> Option<Out> {
        if self.kicked.0.load(Ordering::Relaxed) {
            return Some(Out::Close(Close::new(
                CLOSE_TOO_SLOW,
                "too slow: messages piled up; reconnect to resync",
            )));
        }
        tokio::select! {
            m = self.rx.recv() => m.map(|q| Out::Msg(take(q, &self.queued))),
            _ = self.kicked.1.notified() => Some(Out::Close(Close::new(
                CLOSE_TOO_SLOW,
                "too slow: messages piled up; reconnect to resync",
            ))),
        }
    }
}

fn take(q: Queued, queued: &AtomicUsize) -> Bytes {
    queued.fetch_sub(q.msg.len(), Ordering::Relaxed);
    if let Some(t) = &q.ticket {
        t.taken();
    }
    q.msg
}

impl Drop for Conn {
    fn drop(&mut self) {
        // What it never took must not hold its room's next broadcast.
        self.rx.close();
        while let Ok(q) = self.rx.try_recv() {
            take(q, &self.queued);
        }
        let empty = {
            let Ok(mut st) = self.room.state.lock() else {
                return;
            };
            let Some(slot) = st.clients.remove(&self.id) else {
                return;
            };
            // Its presence goes with it, at once.
            let gone: Vec<ClientID> = slot.awareness_ids.into_iter().collect();
            for id in &gone {
                st.owners.remove(id);
            }
            remove_awareness(&self.service, &mut st, &gone);
            st.clients.is_empty()
        };
        if empty {
            let (service, room) = (self.service.clone(), self.room.clone());
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(unload_later(service, room));
            }
        }
    }
}

fn remove_awareness(service: &Arc<Inner>, st: &mut RoomState, ids: &[ClientID]) {
    if ids.is_empty() {
        return;
    }
    for id in ids {
        // Clocks were checked on the way in; guarded all the same, so that no client state
        // can panic while the room is locked (that would poison it for everyone).
        let awareness = &mut st.awareness;
        if let Err(e) = guarded(|| {
            awareness.remove_state(*id);
            Ok(())
        }) {
            warn!(client = %id, error = %e, "collab: cannot remove an awareness state");
        }
        st.seen.remove(id);
    }
    if let Ok(u) = st.awareness.update_with_clients(ids.iter().copied()) {
        let msg = encode(&Message::Awareness(u));
        broadcast(service, st, None, msg);
    }
}

/// Queues `msg` for every client but `except`; a client whose queue is full is dropped.
fn broadcast(service: &Arc<Inner>, st: &mut RoomState, except: Option<u64>, msg: Bytes) {
    broadcast_with(service, st, except, msg, None);
}

fn broadcast_with(
    service: &Arc<Inner>,
    st: &mut RoomState,
    except: Option<u64>,
    msg: Bytes,
    ticket: Option<&Arc<Ticket>>,
) {
    let mut slow = Vec::new();
    let limit = service.settings.client_queue_bytes;
    for (id, slot) in &st.clients {
        if Some(*id) == except {
            continue;
        }
        // Bytes count as well as messages: a few large relayed messages to a client that does
        // not read must not pin memory by the hundred megabytes.
        if slot.queued.load(Ordering::Relaxed) + msg.len() > limit {
            if let Some(t) = ticket {
                t.taken();
            }
            slow.push(*id);
            continue;
        }
        let q = Queued {
            msg: msg.clone(),
            ticket: ticket.cloned(),
        };
        // Counted before it can be taken (the client takes without the room lock).
        slot.queued.fetch_add(msg.len(), Ordering::Relaxed);
        match slot.tx.try_send(q) {
            Ok(()) => {}
            Err(e) => {
                slot.queued.fetch_sub(msg.len(), Ordering::Relaxed);
                if let Some(t) = ticket {
                    t.taken();
                }
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    slow.push(*id);
                }
            }
        }
    }
    for id in slow {
        if let Some(slot) = st.clients.get(&id) {
            service.metrics.closed_slow.fetch_add(1, Ordering::Relaxed);
            warn!(
                conn = id,
                "collab: client too slow, dropping it from the room"
            );
            slot.kicked.0.store(true, Ordering::Relaxed);
            slot.kicked.1.notify_one();
        }
    }
}

/// Commits updates to the journal and the room's log, then broadcasts them; takes snapshots.
async fn log_task(
    room: std::sync::Weak<Document>,
    name: Arc<str>,
    service: Arc<Inner>,
    store: SharedStore,
    mut rx: mpsc::UnboundedReceiver<Logged>,
) {
    let snapshot_every = service.settings.snapshot_every;
    let mut previous: Option<Arc<Ticket>> = None;
    while let Some(first) = rx.recv().await {
        if let Some(t) = previous.take() {
            t.wait().await;
        }
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let updates: Vec<Bytes> = batch.iter().map(|l| l.update.clone()).collect();
        // Applied, so logged even if the room has meanwhile gone.
        let written = service
            .journal
            .commit(name.clone(), store.clone(), updates)
            .await;
        service.unlogged.fetch_sub(batch.len(), Ordering::AcqRel);
        // The room is gone once its last connection and the service let go of it; what it
        // applied before is still queued here and is logged before `recv` ends.
        let Some(room) = room.upgrade() else { continue };
        if let Err(e) = written {
            // Not durable: not acknowledged. The senders still have them and resend on
            // reconnect (sync step 1 from the server's state would miss them otherwise).
            warn!(room = %room.name, error = %e, "collab: log write failed; dropping the room's clients");
            if let Ok(st) = room.state.lock() {
                for slot in st.clients.values() {
                    slot.kicked.0.store(true, Ordering::Relaxed);
                    slot.kicked.1.notify_one();
                }
            }
            continue;
        }
        service
            .metrics
            .updates
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        notify_watchers(&service, &room, &batch);
        // A batch goes out as one merged update, to everyone (senders ignore their own edits,
        // and the reference server echoes every update too): under load, batches grow and
        // each client gets fewer, larger messages instead of falling behind.
        let merged = if batch.len() > 1 {
            guarded(|| {
                yrs::merge_updates_v1(batch.iter().map(|l| &l.update[..])).map_err(|e| e.to_string())
            })
            .map_err(|e| warn!(room = %room.name, error = %e, "collab: could not merge a batch; sending it update by update"))
            .ok()
        } else {
            None
        };
        let snapshot = {
            let Ok(mut st) = room.state.lock() else { break };
            let ticket = Ticket::new(st.clients.len());
            match &merged {
                Some(m) => {
                    broadcast_with(&service, &mut st, None, update_message(m), Some(&ticket))
                }
                None => {
                    for (i, l) in batch.iter().enumerate() {
                        // The last one paces the room (the sender skips its own: one less).
                        let last = i + 1 == batch.len();
                        if last && st.clients.contains_key(&l.from) {
                            ticket.taken();
                        }
                        let t = last.then_some(&ticket);
                        broadcast_with(
                            &service,
                            &mut st,
                            Some(l.from),
                            update_message(&l.update),
                            t,
                        );
                    }
                }
            }
            previous = Some(ticket);
            st.updates_since_snapshot += batch.len();
            if st.updates_since_snapshot >= snapshot_every {
                st.updates_since_snapshot = 0;
                state_since(
                    &service,
                    &room.name,
                    st.awareness.doc(),
                    &StateVector::default(),
                )
                .map_err(|e| warn!(room = %room.name, error = %e, "collab: snapshot not taken"))
                .ok()
            } else {
                None
            }
        };
        if let Some(state) = snapshot {
            let rotated = match store.lock() {
                Ok(mut s) => s.rotate().map(|next| (next, s.dir().to_path_buf())),
                Err(_) => Err(std::io::Error::other("document store poisoned")),
            };
            match rotated {
                Ok((next, dir)) => {
                    let name = room.name.clone();
                    // Off the edit path: edits go on into the new log meanwhile.
                    let remote = service.remote.clone();
                    let service = service.clone();
                    tokio::spawn(async move {
                        let state = Arc::new(state);
                        let local = state.clone();
                        let written = tokio::task::spawn_blocking(move || {
                            store::write_snapshot(&dir, next, &local)
                        })
                        .await;
                        if !matches!(written, Ok(Ok(()))) {
                            warn!(room = %name, "collab: snapshot failed (the logs stay)");
                        }
                        if let Some(r) = remote {
                            put_remote(&service, r.as_ref(), &name, state.to_vec()).await;
                        }
                    });
                }
                Err(e) => warn!(room = %room.name, error = %e, "collab: log rotation failed"),
            }
        }
    }
}

/// Hands durable updates to the teacher views watching this document.
fn notify_watchers(service: &Inner, room: &Document, batch: &[Logged]) {
    let Ok(mut ws) = service.watchers.lock() else {
        return;
    };
    ws.retain(|w| !w.tx.is_closed());
    for w in ws.iter().filter(|w| room.name.starts_with(&w.prefix)) {
        for l in batch {
            if w.tx
                .try_send((room.shared_name.clone(), l.update.clone()))
                .is_err()
            {
                w.lagged.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// Removes awareness states not renewed within `timeout` (yrs has no timer of its own).
async fn expire_task(service: Arc<Inner>, room: std::sync::Weak<Document>, timeout: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(timeout / 2));
    loop {
        tick.tick().await;
        let Some(room) = room.upgrade() else { return };
        let Ok(mut st) = room.state.lock() else {
            return;
        };
        let now = Instant::now();
        let expired: Vec<ClientID> = st
            .seen
            .iter()
            .filter(|(_, t)| now.duration_since(**t) > timeout)
            .map(|(id, _)| *id)
            .collect();
        remove_awareness(&service, &mut st, &expired);
    }
}

async fn unload_later(service: Arc<Inner>, room: Arc<Document>) {
    tokio::time::sleep(Duration::from_secs(service.settings.unload_after_s)).await;
    let mut rooms = service.rooms.lock().await;
    let empty = room
        .state
        .lock()
        .map(|s| s.clients.is_empty())
        .unwrap_or(true);
    if empty && rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, &room)) {
        if rooms.remove(&room.name).is_some() {
            service.metrics.documents.fetch_sub(1, Ordering::Relaxed);
        }
        drop(rooms);
        info!(room = %room.name, "collab document unloaded (no clients)");
        if let Some(r) = &service.remote {
            let state = room.state.lock().ok().and_then(|st| {
                state_since(
                    &service,
                    &room.name,
                    st.awareness.doc(),
                    &StateVector::default(),
                )
                .ok()
            });
            if let Some(state) = state {
                put_remote(&service, r.as_ref(), &room.name, state).await;
            }
        }
    }
}

async fn put_remote(service: &Inner, r: &dyn SnapshotStore, doc: &str, state: Vec<u8>) {
    match r.put(&remote_key(doc), state).await {
        Ok(()) => {
            service
                .metrics
                .remote_snapshots
                .fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            warn!(%doc, error = %e, "collab: snapshot not stored in object storage (the local copy stays)")
        }
    }
}

impl Collab {
    /// Starts watching every document whose name starts with `prefix`; returns the full state
    /// of those in memory now, and the stream of their updates from here on.
    pub async fn watch(
        &self,
        prefix: &str,
        queue: usize,
    ) -> (
        Vec<(Arc<str>, Vec<u8>)>,
        mpsc::Receiver<(Arc<str>, Bytes)>,
        Arc<AtomicBool>,
    ) {
        let (tx, rx) = mpsc::channel(queue);
        let lagged = Arc::new(AtomicBool::new(false));
        if let Ok(mut ws) = self.inner.watchers.lock() {
            ws.push(Watcher {
                prefix: prefix.to_string(),
                tx,
                lagged: lagged.clone(),
            });
        }
        (self.states(prefix).await, rx, lagged)
    }

    /// Full states of the documents in memory named `{prefix}...`.
    pub async fn states(&self, prefix: &str) -> Vec<(Arc<str>, Vec<u8>)> {
        let rooms: Vec<Arc<Document>> = self
            .inner
            .rooms
            .lock()
            .await
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, r)| r.clone())
            .collect();
        rooms
            .into_iter()
            .filter_map(|r| {
                let st = r.state.lock().ok()?;
                let full = state_since(
                    &self.inner,
                    &r.name,
                    st.awareness.doc(),
                    &StateVector::default(),
                )
                .ok()?;
                Some((r.shared_name.clone(), full))
            })
            .collect()
    }
}

/// A document name: a room name, optionally `~identity` (a student's own document).
pub fn valid_document_name(r: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    r.len() <= 160
        && match r.split_once('~') {
            Some((room, who)) => part(room) && part(who),
            None => part(r),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_message_is_the_y_sync_encoding() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let u: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let expected = Message::Sync(SyncMessage::Update(u.clone())).encode_v1();
            assert_eq!(&update_message(&u)[..], &expected[..], "length {len}");
        }
    }
}
