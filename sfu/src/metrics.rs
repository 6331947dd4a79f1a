use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the core updates with relaxed atomics (no lock) and `/metrics` reads.
#[derive(Debug, Default)]
pub struct SfuMetrics {
    pub rooms: AtomicU64,
    pub participants: AtomicU64,
    pub tracks: AtomicU64,
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    pub datagrams_bad: AtomicU64,
    pub datagrams_send_dropped: AtomicU64,
    pub datagrams_unrouted: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub participants_timed_out: AtomicU64,
    /// ICE-TCP connections open now.
    pub tcp_connections: AtomicU64,
    /// ICE-TCP connections refused at accept (caps) or closed for misbehaving.
    pub tcp_refused: AtomicU64,
    /// Datagrams dropped because a TCP connection's send buffer was full.
    pub tcp_send_dropped: AtomicU64,
}

impl SfuMetrics {
    pub(crate) fn inc(c: &AtomicU64, by: u64) {
        c.fetch_add(by, Ordering::Relaxed);
    }

    pub(crate) fn set(c: &AtomicU64, v: u64) {
        c.store(v, Ordering::Relaxed);
    }

    /// Prometheus text exposition of every counter, prefixed `aula_sfu_`.
    pub fn render(&self, out: &mut String) {
        use metrics_text::Kind::{Counter, Gauge};
        let rows: [(&str, metrics_text::Kind, &AtomicU64); 16] = [
            ("rooms", Gauge, &self.rooms),
            ("participants", Gauge, &self.participants),
            ("tracks", Gauge, &self.tracks),
            ("datagrams_in_total", Counter, &self.datagrams_in),
            ("datagrams_out_total", Counter, &self.datagrams_out),
            ("datagrams_bad_total", Counter, &self.datagrams_bad),
            (
                "datagrams_send_dropped_total",
                Counter,
                &self.datagrams_send_dropped,
            ),
            (
                "datagrams_unrouted_total",
                Counter,
                &self.datagrams_unrouted,
            ),
            ("frames_in_total", Counter, &self.frames_in),
            ("frames_forwarded_total", Counter, &self.frames_forwarded),
            ("bytes_forwarded_total", Counter, &self.bytes_forwarded),
            ("keyframe_requests_total", Counter, &self.keyframe_requests),
            (
                "participants_timed_out_total",
                Counter,
                &self.participants_timed_out,
            ),
            ("tcp_connections", Gauge, &self.tcp_connections),
            ("tcp_refused_total", Counter, &self.tcp_refused),
            ("tcp_send_dropped_total", Counter, &self.tcp_send_dropped),
        ];
        let mut m = metrics_text::Exposition::new(out);
        for (name, kind, v) in rows {
            m.family(&format!("aula_sfu_{name}"), kind, |f| {
                f.value(v.load(Ordering::Relaxed))
            });
        }
    }
}
