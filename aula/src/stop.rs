//! The stop request: Ctrl-C (SIGINT) from a terminal, SIGTERM from systemd, a container runtime
//! or `kill`. Either one stops cleanly: egress jobs are finalised (VOD playlists written), a
//! worker hands its jobs over, the collab journal is synced and emptied.

/// Resolves on the first SIGINT or SIGTERM.
pub async fn requested() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
