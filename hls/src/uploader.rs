//! Stores objects in the order they were given, retrying with backoff until each one is stored,
//! through a bounded queue: a slow or absent bucket holds the job back (and shows in the
//! metrics) instead of losing a part or publishing a playlist that names a missing object.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::object::Object;
use crate::storage::Store;

enum Op {
    Put(Object, Instant),
    Delete(String),
    Flush(oneshot::Sender<()>),
    Then(Box<dyn FnOnce() + Send>),
}

/// Counters for `/metrics`.
#[derive(Default, Debug)]
pub struct UploadStats {
    pub queued: AtomicU64,
    pub stored: AtomicU64,
    pub bytes: AtomicU64,
    pub failed_attempts: AtomicU64,
    /// Time from enqueue to stored of the last object, ms.
    pub last_lag_ms: AtomicU64,
    /// Total time callers waited for room in the queue, ms (backpressure).
    pub blocked_ms: AtomicU64,
    pub deleted: AtomicU64,
}

#[derive(Clone)]
pub struct Uploader {
    tx: mpsc::Sender<Op>,
    stats: Arc<UploadStats>,
}

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);

impl Uploader {
    /// Starts the upload task on the current tokio runtime; it ends when every handle is gone.
    pub fn spawn(store: Arc<Store>, capacity: usize) -> Uploader {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(UploadStats::default());
        tokio::spawn(run(store, rx, stats.clone()));
        Uploader { tx, stats }
    }

    pub fn stats(&self) -> &Arc<UploadStats> {
        &self.stats
    }

    /// Queues an object; waits while the queue is full.
    pub async fn put(&self, o: Object) {
        self.send(Op::Put(o, Instant::now())).await
    }

    pub async fn delete(&self, key: String) {
        self.send(Op::Delete(key)).await
    }

    /// Runs `f` once everything queued before it is stored (e.g. tell blocked playlist
    /// requests that a new playlist is there), without waiting here.
    pub async fn then(&self, f: impl FnOnce() + Send + 'static) {
        self.send(Op::Then(Box::new(f))).await
    }

    /// Waits until everything queued before this call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(tx)).await;
        let _ = rx.await;
    }

    async fn send(&self, op: Op) {
        let t = Instant::now();
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(op).await.is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
        let waited = t.elapsed();
        if waited > Duration::from_millis(1) {
            self.stats
                .blocked_ms
                .fetch_add(waited.as_millis() as u64, Ordering::Relaxed);
        }
    }
}

async fn run(store: Arc<Store>, mut rx: mpsc::Receiver<Op>, stats: Arc<UploadStats>) {
    let down = AtomicBool::new(false);
    while let Some(op) = rx.recv().await {
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        match op {
            Op::Flush(done) => {
                let _ = done.send(());
            }
            Op::Then(f) => f(),
            Op::Put(o, since) => {
                let mut wait = BACKOFF_START;
                let mut attempt = 0u64;
                loop {
                    match store.put(&o).await {
                        Ok(()) => break,
                        Err(e) => {
                            attempt += 1;
                            stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                            if attempt == 1 || attempt.is_multiple_of(10) {
                                warn!(key = %o.key, attempt, error = %e, "upload failed; retrying in order");
                            }
                            down.store(true, Ordering::Relaxed);
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(BACKOFF_MAX);
                        }
                    }
                }
                if down.swap(false, Ordering::Relaxed) {
                    info!(key = %o.key, "storage reachable again");
                }
                stats.stored.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes
                    .fetch_add(o.body.len() as u64, Ordering::Relaxed);
                stats
                    .last_lag_ms
                    .store(since.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            Op::Delete(key) => {
                // Best effort: a segment that outlived its window costs storage, not correctness.
                match store.delete(&key).await {
                    Ok(()) => {
                        stats.deleted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => warn!(%key, error = %e, "delete failed"),
                }
            }
        }
    }
}
