//! The stop request: Ctrl-C (SIGINT) from a terminal, SIGTERM from systemd, a container runtime
//! or `kill`. Either one stops cleanly: egress jobs are finalised (VOD playlists written), a
//! worker hands its jobs over, the collab journal is synced and emptied.

use std::future::Future;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Listens from the moment it is called (a signal that arrives before the future is polled
/// still counts: `aula serve` installs it before it says it is listening) and resolves on the
/// first SIGINT or SIGTERM. Call it inside the runtime.
pub fn requested() -> impl Future<Output = ()> {
    let int = signal(SignalKind::interrupt()).ok();
    let term = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            _ = first(int) => {}
            _ = first(term) => {}
        }
    }
}

/// The signal's first delivery; never, when it could not be installed.
async fn first(s: Option<Signal>) {
    match s {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
