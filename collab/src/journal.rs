//! The collaboration journal: one write-ahead log shared by every document. A writer thread
//! takes whatever updates all rooms have queued, appends them to the journal and makes them
//! durable with one fsync (group commit), then appends them to each room's own log without a
//! sync and answers. Each room fsyncing its own small batches cost ~1,700 fsyncs/s and a
//! blocking-pool handoff per batch at 50 rooms x 30 editors (see docs/decisions.md).
//!
//! About once a second (or every `SEGMENT_BYTES`) the journal starts a new segment and a
//! checkpoint thread syncs the room logs written meanwhile, then deletes the old segment. On
//! start, segments left by a crash are replayed into the room logs: Yjs updates are
//! idempotent, so an update that was in both is harmless.
//!
//! Segment `wal-{n}.bin`: records `[u32 len][u32 crc32][payload]`, payload
//! `[u16 name len][name][u32 count]{[u32 len][update]}`, little-endian. A torn or corrupt
//! record ends the segment's replay (it was never acknowledged).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::store::{self, DocStore};

/// A segment is checkpointed once it holds this much or is this old.
const SEGMENT_BYTES: u64 = 16 << 20;
const SEGMENT_AGE: Duration = Duration::from_secs(1);
/// Commits taken into one group at most (bounds one write's size under a flood).
const GROUP_MAX: usize = 4096;
/// A record longer than this is corruption.
const MAX_RECORD: usize = 256 << 20;

pub(crate) type SharedStore = Arc<Mutex<DocStore>>;

struct Commit {
    doc: Arc<str>,
    store: SharedStore,
    updates: Vec<Bytes>,
    done: oneshot::Sender<io::Result<()>>,
}

enum Request {
    Commit(Commit),
    /// Checkpoint now and answer once no segment is left (a clean stop).
    Flush(oneshot::Sender<()>),
}

pub(crate) struct Journal {
    tx: Mutex<mpsc::Sender<Request>>,
    /// Group commits (fsyncs of the journal) so far.
    pub syncs: Arc<AtomicU64>,
}

impl Journal {
    /// Replays what a previous run left in `dir` into the documents under `docs`, then starts
    /// the writer and checkpoint threads.
    pub fn open(dir: &Path, docs: &Path) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        let next = recover(dir, docs)?;
        let syncs = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let (ck_tx, ck_rx) = mpsc::channel();
        thread("collab-checkpoint", move || checkpointer(ck_rx))?;
        {
            let (dir, syncs) = (dir.to_path_buf(), syncs.clone());
            thread("collab-journal", move || {
                writer(dir, next, rx, ck_tx, syncs)
            })?;
        }
        Ok(Journal {
            tx: Mutex::new(tx),
            syncs,
        })
    }

    /// Makes `updates` of `doc` durable (journal fsynced) and appends them to its log.
    pub async fn commit(
        &self,
        doc: Arc<str>,
        store: SharedStore,
        updates: Vec<Bytes>,
    ) -> io::Result<()> {
        let (done, answer) = oneshot::channel();
        let c = Commit {
            doc,
            store,
            updates,
            done,
        };
        let sent = self
            .tx
            .lock()
            .map_err(|_| io::Error::other("journal poisoned"))?
            .send(Request::Commit(c));
        if sent.is_err() {
            return Err(io::Error::other("the journal writer stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the journal writer stopped")))
    }

    /// Syncs every document log and removes the journal's segments, so that a clean stop
    /// leaves nothing to replay. Commits after this start a new segment.
    pub async fn flush(&self) {
        let (done, answer) = oneshot::channel();
        let sent = self.tx.lock().map(|tx| tx.send(Request::Flush(done)));
        if matches!(sent, Ok(Ok(()))) {
            let _ = answer.await;
        }
    }
}

fn thread(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
}

struct Segment {
    path: PathBuf,
    file: File,
    len: u64,
    started: Instant,
}

impl Segment {
    fn create(dir: &Path, n: u64) -> io::Result<Segment> {
        let path = segment_path(dir, n);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // Its name must survive a crash for its records to.
        File::open(dir)?.sync_all()?;
        Ok(Segment {
            path,
            file,
            len: 0,
            started: Instant::now(),
        })
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:010}.bin"))
}

/// A finished segment and the room logs its records went to: once those are synced, the
/// segment is redundant.
struct Checkpoint {
    segment: PathBuf,
    stores: Vec<SharedStore>,
    done: Option<oneshot::Sender<()>>,
}

fn writer(
    dir: PathBuf,
    mut next: u64,
    rx: mpsc::Receiver<Request>,
    checkpoints: mpsc::Sender<Checkpoint>,
    syncs: Arc<AtomicU64>,
) {
    // Created on the first commit after a start or a flush.
    let mut seg: Option<Segment> = None;
    let mut dirty: HashMap<*const Mutex<DocStore>, SharedStore> = HashMap::new();
    let mut buf = Vec::new();
    let mut group = Vec::new();
    let mut flush = None;
    while let Ok(first) = rx.recv() {
        let mut request = Some(first);
        while let Some(r) = request.take() {
            match r {
                Request::Commit(c) => group.push(c),
                Request::Flush(done) => flush = Some(done),
            }
            if group.len() < GROUP_MAX {
                request = rx.try_recv().ok();
            }
        }
        if !group.is_empty() {
            let s = match seg.take() {
                Some(s) => Ok(s),
                None => Segment::create(&dir, next).inspect(|_| next += 1),
            };
            match s {
                Ok(s) => seg = Some(commit(s, &mut group, &mut buf, &mut dirty, &syncs)),
                Err(e) => refuse(&mut group, &e, "cannot start a journal segment"),
            }
        }
        let due = seg
            .as_ref()
            .is_some_and(|s| s.len >= SEGMENT_BYTES || s.started.elapsed() >= SEGMENT_AGE);
        if due || flush.is_some() {
            let done = flush.take();
            match seg.take() {
                Some(old) => {
                    let _ = checkpoints.send(Checkpoint {
                        segment: old.path,
                        stores: dirty.drain().map(|(_, s)| s).collect(),
                        done,
                    });
                }
                None => {
                    if let Some(d) = done {
                        let _ = d.send(());
                    }
                }
            }
        }
    }
    // Every room let go (the service is shutting down): checkpoint what is left.
    if let Some(s) = seg {
        let _ = checkpoints.send(Checkpoint {
            segment: s.path,
            stores: dirty.drain().map(|(_, s)| s).collect(),
            done: None,
        });
    }
}

/// Answers a group that could not be made durable: the rooms drop their clients, who resend.
fn refuse(group: &mut Vec<Commit>, e: &io::Error, what: &str) {
    warn!(error = %e, "collab: {what}; updates refused");
    for c in group.drain(..) {
        let _ = c.done.send(Err(io::Error::new(e.kind(), e.to_string())));
    }
}

/// Bytes of the group-commit buffer kept between commits: room for an ordinary group.
const BUF_KEEP: usize = 256 << 10;

/// Writes a group to the segment with one fsync, then to the document logs; answers each.
fn commit(
    mut seg: Segment,
    group: &mut Vec<Commit>,
    buf: &mut Vec<u8>,
    dirty: &mut HashMap<*const Mutex<DocStore>, SharedStore>,
    syncs: &AtomicU64,
) -> Segment {
    buf.clear();
    for c in group.iter() {
        encode_record(buf, &c.doc, &c.updates);
    }
    let written = seg.file.write_all(buf).and_then(|()| seg.file.sync_data());
    if let Err(e) = written {
        refuse(group, &e, "journal write failed");
        return seg;
    }
    syncs.fetch_add(1, Ordering::Relaxed);
    seg.len += buf.len() as u64;
    // One group of large updates (each up to the frame limit) grows the buffer to ~10 MiB;
    // kept, it stayed resident for the life of the process (the soak's one-off heap step).
    buf.clear();
    buf.shrink_to(BUF_KEEP);
    for c in group.drain(..) {
        let appended = match c.store.lock() {
            Ok(mut s) => s.append(&c.updates),
            Err(_) => Err(io::Error::other("document store poisoned")),
        };
        dirty.insert(Arc::as_ptr(&c.store), c.store.clone());
        let _ = c.done.send(appended);
    }
    seg
}

fn checkpointer(rx: mpsc::Receiver<Checkpoint>) {
    while let Ok(ck) = rx.recv() {
        let mut ok = true;
        for s in &ck.stores {
            let handles = match s.lock() {
                Ok(mut s) => s.sync_handles(),
                Err(_) => Err(io::Error::other("document store poisoned")),
            };
            // The sync runs without the store's lock: appends go on meanwhile.
            if let Err(e) = handles.and_then(|(files, dir)| store::sync_all(&files, dir.as_deref()))
            {
                warn!(error = %e, "collab: syncing a document log failed; its journal segment stays");
                ok = false;
            }
        }
        if ok {
            if let Err(e) = fs::remove_file(&ck.segment) {
                warn!(segment = %ck.segment.display(), error = %e, "collab: journal segment not removed");
            }
        }
        if let Some(d) = ck.done {
            let _ = d.send(());
        }
    }
}

fn encode_record(out: &mut Vec<u8>, doc: &str, updates: &[Bytes]) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&(doc.len() as u16).to_le_bytes());
    out.extend_from_slice(doc.as_bytes());
    out.extend_from_slice(&(updates.len() as u32).to_le_bytes());
    for u in updates {
        out.extend_from_slice(&(u.len() as u32).to_le_bytes());
        out.extend_from_slice(u);
    }
    let payload = start + 8;
    let len = (out.len() - payload) as u32;
    let crc = crc32fast::hash(&out[payload..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..payload].copy_from_slice(&crc.to_le_bytes());
}

/// Reads a segment's records: `(document, updates)`, up to the first torn or corrupt one.
fn read_segment(b: &[u8], mut f: impl FnMut(&str, Vec<Vec<u8>>)) -> Result<(), String> {
    let mut at = 0;
    let u32_at = |b: &[u8], i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
    };
    while at < b.len() {
        let (Some(len), Some(crc)) = (u32_at(b, at), u32_at(b, at + 4)) else {
            return Err(format!("torn record header at {at}"));
        };
        let len = len as usize;
        let Some(p) = b.get(at + 8..at + 8 + len).filter(|_| len <= MAX_RECORD) else {
            return Err(format!("torn record at {at}"));
        };
        if crc32fast::hash(p) != crc {
            return Err(format!("corrupt record at {at}"));
        }
        let parsed = (|| {
            let nlen = u16::from_le_bytes(p.get(0..2)?.try_into().ok()?) as usize;
            let doc = std::str::from_utf8(p.get(2..2 + nlen)?).ok()?;
            let mut i = 2 + nlen;
            let count = u32_at(p, i)?;
            i += 4;
            let mut updates = Vec::new();
            for _ in 0..count {
                let ulen = u32_at(p, i)? as usize;
                updates.push(p.get(i + 4..i + 4 + ulen)?.to_vec());
                i += 4 + ulen;
            }
            Some((doc, updates))
        })();
        let Some((doc, updates)) = parsed else {
            return Err(format!("malformed record at {at}"));
        };
        f(doc, updates);
        at += 8 + len;
    }
    Ok(())
}

/// Replays every segment in `dir` into the document logs under `docs`, syncs them, deletes the
/// segments; returns the number for the next segment.
fn recover(dir: &Path, docs: &Path) -> io::Result<u64> {
    let segs = store::numbered(dir, "wal-")?;
    let next = segs.last().map_or(0, |(n, _)| n + 1);
    if segs.is_empty() {
        // A clean stop (or a first start): nothing to replay.
        return Ok(next);
    }
    let mut by_doc: HashMap<String, Vec<Bytes>> = HashMap::new();
    let mut records = 0usize;
    for (_, path) in &segs {
        let mut b = Vec::new();
        File::open(path)?.read_to_end(&mut b)?;
        let read = read_segment(&b, |doc, updates| {
            records += 1;
            if !super::valid_document_name(doc) {
                warn!(%doc, "collab: journal record for an invalid document name skipped");
                return;
            }
            by_doc
                .entry(doc.to_string())
                .or_default()
                .extend(updates.into_iter().map(Bytes::from));
        });
        if let Err(e) = read {
            // Never acknowledged: the client still had it and resent it on reconnect.
            warn!(segment = %path.display(), "collab: journal replay stopped: {e}");
        }
    }
    for (doc, updates) in &by_doc {
        let (mut s, _) = DocStore::open(&docs.join(doc))?;
        s.append(updates)?;
        s.sync()?;
    }
    for (_, path) in &segs {
        fs::remove_file(path)?;
    }
    File::open(dir)?.sync_all()?;
    info!(
        records,
        documents = by_doc.len(),
        "collab: journal replayed after an unclean stop"
    );
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_stop_at_damage() {
        let mut b = Vec::new();
        encode_record(&mut b, "room-a", &[Bytes::from_static(b"u1"), Bytes::new()]);
        encode_record(&mut b, "room-b~sam", &[Bytes::from_static(b"u2")]);
        let mut seen = Vec::new();
        read_segment(&b, |d, u| seen.push((d.to_string(), u))).unwrap();
        assert_eq!(
            seen,
            vec![
                ("room-a".to_string(), vec![b"u1".to_vec(), vec![]]),
                ("room-b~sam".to_string(), vec![b"u2".to_vec()]),
            ]
        );
        // Every truncation and every flipped byte: no panic, and no record that was not
        // written whole.
        for cut in 0..b.len() {
            let mut n = 0;
            let _ = read_segment(&b[..cut], |_, _| n += 1);
            assert!(n <= 2);
        }
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x5a;
            let mut got = Vec::new();
            let _ = read_segment(&d, |doc, u| got.push((doc.to_string(), u)));
            for g in &got {
                assert!(seen.contains(g), "flipped byte {i} produced {g:?}");
            }
        }
    }

    /// A group of large updates does not leave its buffer behind: between commits the
    /// writer keeps at most `BUF_KEEP` of it.
    #[test]
    fn a_large_group_does_not_keep_its_buffer() {
        let root = std::env::temp_dir().join(format!("aula-journal-b-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (dir, docs) = (root.join("journal"), root.join("docs"));
        fs::create_dir_all(&dir).unwrap();
        let (store, _) = DocStore::open(&docs.join("r1")).unwrap();
        let store = Arc::new(Mutex::new(store));
        let mut group: Vec<Commit> = (0..12)
            .map(|_| Commit {
                doc: "r1".into(),
                store: store.clone(),
                updates: vec![Bytes::from(vec![7u8; 900 << 10])],
                done: oneshot::channel().0,
            })
            .collect();
        let (mut buf, mut dirty) = (Vec::new(), HashMap::new());
        let seg = commit(
            Segment::create(&dir, 1).unwrap(),
            &mut group,
            &mut buf,
            &mut dirty,
            &AtomicU64::new(0),
        );
        assert!(seg.len > 10 << 20, "all 12 written ({} bytes)", seg.len);
        assert!(buf.capacity() <= BUF_KEEP, "kept {} bytes", buf.capacity());
        drop((seg, dirty));
        let _ = fs::remove_dir_all(&root);
    }

    /// Commits through the writer thread; then the document logs are lost (as if never
    /// synced) and the journal alone restores them.
    #[tokio::test]
    async fn committed_updates_survive_in_the_journal_alone() {
        let root = std::env::temp_dir().join(format!("aula-journal-c-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (dir, docs) = (root.join("journal"), root.join("docs"));
        let j = Journal::open(&dir, &docs).unwrap();
        let (store, _) = DocStore::open(&docs.join("r1")).unwrap();
        let store = Arc::new(Mutex::new(store));
        for u in [&b"a"[..], b"b", b"c"] {
            j.commit("r1".into(), store.clone(), vec![Bytes::copy_from_slice(u)])
                .await
                .unwrap();
        }
        assert!(j.syncs.load(Ordering::Relaxed) >= 1);
        let (_, l) = DocStore::open(&docs.join("r1")).unwrap();
        assert_eq!(l.updates, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        // A copy of the journal as it is now (the writer is still running), on a machine
        // whose document logs did not survive.
        let (dir2, docs2) = (root.join("journal2"), root.join("docs2"));
        fs::create_dir_all(&dir2).unwrap();
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), dir2.join(e.file_name())).unwrap();
        }
        recover(&dir2, &docs2).unwrap();
        let (_, l) = DocStore::open(&docs2.join("r1")).unwrap();
        assert_eq!(l.updates, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        // A clean stop leaves no segment to replay; a commit after it starts a new one.
        j.flush().await;
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        j.commit("r1".into(), store.clone(), vec![Bytes::from_static(b"d")])
            .await
            .unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        drop(j);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn replay_after_a_crash() {
        let root = std::env::temp_dir().join(format!("aula-journal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (dir, docs) = (root.join("journal"), root.join("docs"));
        fs::create_dir_all(&dir).unwrap();
        // What a killed run left: two segments, the second with a torn tail.
        let mut a = Vec::new();
        encode_record(&mut a, "r1", &[Bytes::from_static(b"one")]);
        fs::write(segment_path(&dir, 3), &a).unwrap();
        let mut b = Vec::new();
        encode_record(&mut b, "r1", &[Bytes::from_static(b"two")]);
        encode_record(&mut b, "../evil", &[Bytes::from_static(b"x")]);
        encode_record(&mut b, "r2", &[Bytes::from_static(b"three")]);
        b.extend_from_slice(&[9, 0, 0, 0, 1]);
        fs::write(segment_path(&dir, 4), &b).unwrap();
        assert_eq!(recover(&dir, &docs).unwrap(), 5);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        let (_, l1) = DocStore::open(&docs.join("r1")).unwrap();
        assert_eq!(l1.updates, vec![b"one".to_vec(), b"two".to_vec()]);
        let (_, l2) = DocStore::open(&docs.join("r2")).unwrap();
        assert_eq!(l2.updates, vec![b"three".to_vec()]);
        assert!(!root.join("evil").exists());
        let _ = fs::remove_dir_all(&root);
    }
}
