//! The gate in front of the jitter buffer: checks each RTP header, drops what cannot be one of
//! ours, and hides SSRC changes (a publisher that re-publishes, an SFU layer switch) by mapping
//! every accepted source onto one continuous sequence-number and timestamp line, so the jitter
//! buffer and depayloader never see a jump they would treat as a new stream.

use std::time::Instant;

/// Why a packet did not go in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    TooShort,
    NotRtpV2,
    /// CSRC list, header extension or padding run past the end.
    Truncated,
    WrongPayloadType(u8),
    /// From an SSRC that has not (yet) shown itself to be the new source.
    UnknownSsrc(u32),
    /// The pipeline has stopped taking input.
    Closed,
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::TooShort => f.write_str("shorter than an RTP header"),
            Reject::NotRtpV2 => f.write_str("not RTP version 2"),
            Reject::Truncated => f.write_str("CSRC, extension or padding past the end"),
            Reject::WrongPayloadType(pt) => write!(f, "unexpected payload type {pt}"),
            Reject::UnknownSsrc(s) => write!(f, "unexpected SSRC {s:#010x}"),
            Reject::Closed => f.write_str("transcoder closed"),
        }
    }
}

/// A new SSRC takes over after this many consecutive valid packets from it.
const SWITCH_AFTER: usize = 3;

struct Header {
    ssrc: u32,
}

fn parse(p: &[u8], pt: u8) -> Result<Header, Reject> {
    if p.len() < 12 {
        return Err(Reject::TooShort);
    }
    if p[0] >> 6 != 2 {
        return Err(Reject::NotRtpV2);
    }
    let cc = (p[0] & 0x0f) as usize;
    let mut end = 12 + 4 * cc;
    if p.len() < end {
        return Err(Reject::Truncated);
    }
    if p[0] & 0x10 != 0 {
        if p.len() < end + 4 {
            return Err(Reject::Truncated);
        }
        let words = u16::from_be_bytes([p[end + 2], p[end + 3]]) as usize;
        end += 4 + 4 * words;
        if p.len() < end {
            return Err(Reject::Truncated);
        }
    }
    if p[0] & 0x20 != 0 {
        let pad = p[p.len() - 1] as usize;
        if pad == 0 || end + pad > p.len() {
            return Err(Reject::Truncated);
        }
    }
    let got = p[1] & 0x7f;
    if got != pt {
        return Err(Reject::WrongPayloadType(got));
    }
    Ok(Header {
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
    })
}

pub struct RtpInput {
    payload_type: u8,
    clock_rate: u32,
    /// The SSRC written on every output packet (the first one seen).
    out_ssrc: Option<u32>,
    current: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    /// Last output (seq, ts, when).
    last: Option<(u16, u32, Instant)>,
    /// Packets of a would-be new source, kept until it proves itself.
    candidate: Vec<Vec<u8>>,
}

impl RtpInput {
    pub fn new(payload_type: u8, clock_rate: u32) -> Self {
        RtpInput {
            payload_type,
            clock_rate,
            out_ssrc: None,
            current: None,
            seq_offset: 0,
            ts_offset: 0,
            last: None,
            candidate: Vec::new(),
        }
    }

    /// Checks `packet` and hands `emit` the packet(s) to feed, each with its header already
    /// rewritten onto the continuous line. Usually one; several when a new SSRC takes over.
    pub fn admit(
        &mut self,
        packet: &[u8],
        now: Instant,
        emit: &mut dyn FnMut(Vec<u8>),
    ) -> Result<(), Reject> {
        let h = parse(packet, self.payload_type)?;
        match self.current {
            None => {
                self.out_ssrc = Some(h.ssrc);
                self.current = Some(h.ssrc);
            }
            Some(cur) if cur == h.ssrc => {}
            Some(_) => {
                if self
                    .candidate
                    .first()
                    .is_some_and(|c| c[8..12] != packet[8..12])
                {
                    self.candidate.clear();
                }
                self.candidate.push(packet.to_vec());
                if self.candidate.len() < SWITCH_AFTER {
                    return Err(Reject::UnknownSsrc(h.ssrc));
                }
                self.switch_to(h.ssrc, now);
                for p in std::mem::take(&mut self.candidate) {
                    self.emit_one(p, now, emit);
                }
                return Ok(());
            }
        }
        self.candidate.clear();
        self.emit_one(packet.to_vec(), now, emit);
        Ok(())
    }

    /// Maps the new source's first packet right after the last output, in sequence and in time.
    fn switch_to(&mut self, ssrc: u32, now: Instant) {
        let first = &self.candidate[0];
        let seq = u16::from_be_bytes([first[2], first[3]]);
        let ts = u32::from_be_bytes([first[4], first[5], first[6], first[7]]);
        let (last_seq, last_ts, at) = self.last.unwrap_or((seq, ts, now));
        let elapsed = now.saturating_duration_since(at).as_secs_f64().max(0.001);
        let want_ts = last_ts.wrapping_add((elapsed * self.clock_rate as f64) as u32);
        self.seq_offset = last_seq.wrapping_add(1).wrapping_sub(seq);
        self.ts_offset = want_ts.wrapping_sub(ts);
        self.current = Some(ssrc);
        tracing::info!(
            ssrc = format_args!("{ssrc:#010x}"),
            "rtp input: new SSRC took over"
        );
    }

    fn emit_one(&mut self, mut p: Vec<u8>, now: Instant, emit: &mut dyn FnMut(Vec<u8>)) {
        let seq = u16::from_be_bytes([p[2], p[3]]).wrapping_add(self.seq_offset);
        let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]).wrapping_add(self.ts_offset);
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        if let Some(ssrc) = self.out_ssrc {
            p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        }
        // Only forward progress moves the anchor used for the next switch.
        let newer = self
            .last
            .is_none_or(|(s, _, _)| seq.wrapping_sub(s) < 0x8000 && seq != s);
        if newer {
            self.last = Some((seq, ts, now));
        }
        emit(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pkt(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
        let mut p = vec![0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    fn fields(p: &[u8]) -> (u32, u16, u32) {
        (
            u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            u16::from_be_bytes([p[2], p[3]]),
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        )
    }

    #[test]
    fn new_ssrc_continues_the_line_after_three_packets() {
        let mut g = RtpInput::new(96, 90_000);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..10u16 {
            g.admit(&pkt(1, 100 + i, 3000 * i as u32), t0, &mut |p| out.push(p))
                .expect("ok");
        }
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            g.admit(&pkt(2, 9000, 555), t1, &mut |p| out.push(p)),
            Err(Reject::UnknownSsrc(2))
        );
        assert!(g
            .admit(&pkt(2, 9001, 555), t1, &mut |p| out.push(p))
            .is_err());
        g.admit(&pkt(2, 9002, 3555), t1, &mut |p| out.push(p))
            .expect("switch");
        assert_eq!(out.len(), 13);
        let (ssrc, seq, ts) = fields(&out[10]);
        assert_eq!((ssrc, seq), (1, 110));
        assert_eq!(ts, 27_000 + 9_000); // 100 ms later on the 90 kHz clock
        assert_eq!(fields(&out[12]).1, 112);
        assert_eq!(fields(&out[12]).2, 36_000 + 3000);
    }

    #[test]
    fn a_stray_packet_does_not_take_over() {
        let mut g = RtpInput::new(96, 90_000);
        let now = Instant::now();
        let mut n = 0;
        for i in 0..20u16 {
            let _ = g.admit(&pkt(1, i, 0), now, &mut |_| n += 1);
            let _ = g.admit(&pkt(1000 + i as u32, i, 0), now, &mut |_| n += 1);
        }
        assert_eq!(n, 20);
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut g = RtpInput::new(96, 90_000);
        let now = Instant::now();
        for _ in 0..200_000 {
            let len = rng.random_range(0..64);
            let mut p: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if len > 1 && rng.random_bool(0.5) {
                p[0] = 0x80 | (p[0] & 0x3f);
                p[1] = 96;
            }
            let _ = g.admit(&p, now, &mut |_| {});
        }
    }
}
