//! The one seam between aula and its WebRTC transport, str0m (pinned exactly in the workspace).
//! Every other module imports transport types from here, so a str0m upgrade touches this file
//! and the call sites the compiler points at, nothing else.

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Instant;

pub use str0m::bwe::{Bitrate, BweKind};
pub use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
pub use str0m::channel::ChannelId;
pub use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Rid};
pub use str0m::net::{Protocol, Receive, TcpType};
pub use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::error::SfuError;
use crate::signal::PeerKind;

static CRYPTO: Once = Once::new();

/// str0m needs a process-wide crypto provider (aws-lc-rs, see docs/decisions.md).
pub fn init_crypto() {
    CRYPTO.call_once(|| {
        str0m::crypto::from_feature_flags().install_process_default();
    });
}

/// A server-side peer: ICE-lite on aula's media addresses (the UDP one and, when configured,
/// a passive TCP one), opus + VP8 + H264 only, TWCC bandwidth estimation where the SFU sends
/// media.
pub fn new_peer(
    now: Instant,
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    kind: PeerKind,
) -> Result<Rtc, SfuError> {
    init_crypto();
    let mut cfg = Rtc::builder()
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true);
    if kind != PeerKind::Whip {
        // 1 Mbit/s start: enough for the middle layer; probing finds more within seconds.
        cfg = cfg.enable_bwe(Some(Bitrate::kbps(1000)));
    }
    let mut rtc = cfg.build(now);
    let bad = |e: str0m::error::IceError| SfuError::Negotiation(e.to_string());
    if let Some(addr) = udp {
        rtc.add_local_candidate(Candidate::host(addr, "udp").map_err(bad)?);
    }
    if let Some(addr) = tcp {
        // Passive: the browser connects to us (an ICE-lite server never dials out).
        let cand = Candidate::builder()
            .tcp()
            .host(addr)
            .tcptype(TcpType::Passive)
            .build()
            .map_err(bad)?;
        rtc.add_local_candidate(cand);
    }
    Ok(rtc)
}

pub fn parse_offer(sdp: &str) -> Result<SdpOffer, SfuError> {
    SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))
}

pub fn parse_answer(sdp: &str) -> Result<SdpAnswer, SfuError> {
    SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))
}

/// Parses a trickled candidate line (`candidate:...` with or without the `a=` prefix).
pub fn parse_candidate(line: &str) -> Result<Candidate, SfuError> {
    let line = line.trim().trim_start_matches("a=");
    Candidate::from_sdp_string(line).map_err(|e| SfuError::BadCandidate(e.to_string()))
}

pub fn clock_hz(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Audio => 48_000,
        MediaKind::Video => 90_000,
    }
}
