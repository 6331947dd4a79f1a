//! The stop request: Ctrl-C (SIGINT) from a terminal, SIGTERM from systemd, a container runtime
//! or `kill`. Either one stops cleanly: egress jobs are finalised (VOD playlists written), a
//! worker hands its jobs over, the collab journal is synced and emptied.

use std::future::Future;

/// Listens from the moment it is called (a signal that arrives before the future is polled
/// still counts: `aula serve` installs it before it says it is listening) and resolves on the
/// first SIGINT or SIGTERM. Call it inside the runtime.
pub fn requested() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let int = async {
            match int.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int => {}
            _ = term => {}
        }
    }
}
