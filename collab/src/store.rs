//! A room document on disk: a snapshot (the whole state as one update) plus append-only logs of
//! the updates since. `log-{seq}.bin` holds length-prefixed updates; `snap.bin` starts with the
//! first log sequence it does not cover. A snapshot starts a new log; older logs are deleted once
//! the snapshot is durable, so a crash at any point leaves a loadable set.
//!
//! Appends here are not fsynced one by one: the shared journal (`journal.rs`) makes updates
//! durable first, and syncs these logs (`sync_handles`) before it drops its own copy.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

/// An update longer than this in a log is corruption, not data.
const MAX_ENTRY: usize = 64 << 20;

pub(crate) struct DocStore {
    dir: PathBuf,
    seq: u64,
    log: BufWriter<File>,
    /// Logs rotated away from since the last sync, still to be synced.
    unsynced: Vec<File>,
    /// A log file was created since the last sync: its directory entry needs a sync too.
    created: bool,
}

/// What a room's directory held.
pub(crate) struct Loaded {
    pub snapshot: Option<Vec<u8>>,
    pub updates: Vec<Vec<u8>>,
}

impl DocStore {
    /// Opens (creating) the room's directory; returns the store and what it held.
    pub fn open(dir: &Path) -> std::io::Result<(DocStore, Loaded)> {
        fs::create_dir_all(dir)?;
        let (from, snapshot) = match fs::read(dir.join("snap.bin")) {
            Ok(b) if b.len() >= 8 => {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&b[..8]);
                (u64::from_le_bytes(seq), Some(b[8..].to_vec()))
            }
            Ok(_) => {
                warn!(dir = %dir.display(), "collab: snapshot too short, ignored");
                (0, None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, None),
            Err(e) => return Err(e),
        };
        let seqs: Vec<u64> = numbered(dir, "log-")?.into_iter().map(|(s, _)| s).collect();
        let mut updates = Vec::new();
        for s in seqs.iter().filter(|s| **s >= from) {
            read_log(&log_path(dir, *s), &mut updates)?;
        }
        // Appends go to a fresh log: a torn tail in the last one stays where it is, skipped.
        let seq = seqs.last().map_or(from, |s| s + 1).max(from);
        let log = open_log(dir, seq)?;
        Ok((
            DocStore {
                dir: dir.to_path_buf(),
                seq,
                log,
                unsynced: Vec::new(),
                created: true,
            },
            Loaded { snapshot, updates },
        ))
    }

    /// Appends updates to the log (written, not yet synced: see `sync_handles`).
    pub fn append(&mut self, updates: &[bytes::Bytes]) -> std::io::Result<()> {
        for u in updates {
            self.log.write_all(&(u.len() as u32).to_le_bytes())?;
            self.log.write_all(u)?;
        }
        self.log.flush()
    }

    /// Starts a new log; returns the sequence a snapshot taken now must name.
    pub fn rotate(&mut self) -> std::io::Result<u64> {
        let next = open_log(&self.dir, self.seq + 1)?;
        let old = std::mem::replace(&mut self.log, next);
        self.seq += 1;
        self.created = true;
        match old.into_inner() {
            Ok(f) => self.unsynced.push(f),
            Err(e) => return Err(e.into_error()),
        }
        Ok(self.seq)
    }

    /// What must be synced for everything appended so far to be durable: the log files
    /// written since the last call and, if a log was created, the directory. Syncing happens
    /// outside, without holding up appends.
    pub fn sync_handles(&mut self) -> std::io::Result<(Vec<File>, Option<PathBuf>)> {
        let mut files = std::mem::take(&mut self.unsynced);
        files.push(self.log.get_ref().try_clone()?);
        let dir = std::mem::take(&mut self.created).then(|| self.dir.clone());
        Ok((files, dir))
    }

    /// Syncs everything appended so far (recovery; the journal's checkpoint does this in
    /// its own thread with `sync_handles`).
    pub fn sync(&mut self) -> std::io::Result<()> {
        let (files, dir) = self.sync_handles()?;
        sync_all(&files, dir.as_deref())
    }

    /// The log appends go to now.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Syncs log files, then the directory holding them (new files' names).
pub(crate) fn sync_all(files: &[File], dir: Option<&Path>) -> std::io::Result<()> {
    for f in files {
        f.sync_data()?;
    }
    if let Some(d) = dir {
        File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// Writes a snapshot covering every log before `next_seq`, then deletes those logs. Blocking.
pub(crate) fn write_snapshot(dir: &Path, next_seq: u64, state: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join("snap.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&next_seq.to_le_bytes())?;
        f.write_all(state)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join("snap.bin"))?;
    File::open(dir)?.sync_all()?;
    for (s, path) in numbered(dir, "log-")? {
        if s < next_seq {
            let _ = fs::remove_file(path);
        }
    }
    Ok(())
}

/// The files `{prefix}{n}.bin` in `dir` (document logs, journal segments), by `n`.
pub(crate) fn numbered(dir: &Path, prefix: &str) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix(prefix)?
                .strip_suffix(".bin")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}

fn log_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("log-{seq:010}.bin"))
}

fn open_log(dir: &Path, seq: u64) -> std::io::Result<BufWriter<File>> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir, seq))?;
    Ok(BufWriter::new(f))
}

fn read_log(path: &Path, out: &mut Vec<Vec<u8>>) -> std::io::Result<()> {
    let mut b = Vec::new();
    File::open(path)?.read_to_end(&mut b)?;
    let mut at = 0;
    while at + 4 <= b.len() {
        let mut len = [0u8; 4];
        len.copy_from_slice(&b[at..at + 4]);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_ENTRY || at + 4 + len > b.len() {
            // A write cut short by a crash: that update was never acknowledged.
            warn!(log = %path.display(), offset = at, "collab: torn log tail skipped");
            break;
        }
        out.push(b[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn logs_snapshots_and_torn_tails() {
        let dir = std::env::temp_dir().join(format!("aula-collab-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut s, l) = DocStore::open(&dir).unwrap();
        assert!(l.snapshot.is_none() && l.updates.is_empty());
        let a = Bytes::from_static(b"one");
        let b = Bytes::from_static(b"two");
        s.append(&[a.clone(), b.clone()]).unwrap();
        s.sync().unwrap();
        drop(s);
        let (mut s, l) = DocStore::open(&dir).unwrap();
        assert_eq!(l.updates, vec![b"one".to_vec(), b"two".to_vec()]);
        let next = s.rotate().unwrap();
        s.append(&[Bytes::from_static(b"three")]).unwrap();
        s.sync().unwrap();
        write_snapshot(&dir, next, b"STATE").unwrap();
        // A torn write at the end of the newest log.
        {
            let mut f = OpenOptions::new()
                .append(true)
                .open(log_path(&dir, next))
                .unwrap();
            f.write_all(&100u32.to_le_bytes()).unwrap();
            f.write_all(b"short").unwrap();
        }
        drop(s);
        let (_s, l) = DocStore::open(&dir).unwrap();
        assert_eq!(l.snapshot.as_deref(), Some(&b"STATE"[..]));
        assert_eq!(l.updates, vec![b"three".to_vec()]);
        let _ = fs::remove_dir_all(&dir);
    }
}
