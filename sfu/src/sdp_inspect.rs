//! A first look at an SDP offer before it reaches the transport: what it wants to send and
//! receive and whether any codec is one aula forwards. str0m parses the SDP itself; this only
//! turns "valid but useless" offers into clear errors (and permission checks) up front.

use crate::error::SfuError;

/// Offers beyond this are refused before parsing (a browser's offer is 3-10 KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    /// Audio/video sections the offerer sends on (sendonly/sendrecv).
    pub sends: usize,
    /// Audio/video sections the offerer receives on (recvonly/sendrecv).
    pub receives: usize,
    /// Audio/video sections with at least one codec aula forwards.
    pub usable: usize,
    /// Audio/video sections in all.
    pub media: usize,
    /// Whether a data channel (m=application) is offered.
    pub data: bool,
    /// The mids of audio/video sections the offerer does not (or no longer) send on: rejected
    /// (port 0, a stopped transceiver), recvonly or inactive. A track published on one of them
    /// is over (a screen share stopped).
    pub silent_mids: Vec<String>,
}

/// At most this many mids are kept in [`OfferSummary::silent_mids`] (a browser offer has a
/// handful of m-lines; the rest of a hostile one is counted, not kept).
const MAX_SILENT_MIDS: usize = 64;

const USABLE: [&str; 3] = ["opus", "vp8", "h264"];

pub fn inspect_offer(sdp: &str) -> Result<OfferSummary, SfuError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(SfuError::BadSdp(format!(
            "offer is {} bytes, limit {MAX_SDP_BYTES}",
            sdp.len()
        )));
    }
    if !sdp.trim_start().starts_with("v=0") {
        return Err(SfuError::BadSdp("does not start with v=0".into()));
    }
    let mut out = OfferSummary::default();
    let mut section: Option<Section> = None;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            if let Some(s) = section.take() {
                s.finish(&mut out);
            }
            let mut parts = rest.split(' ');
            let kind = parts.next().unwrap_or("");
            let port = parts.next().unwrap_or("");
            section = Some(Section {
                media: kind == "audio" || kind == "video",
                data: kind == "application",
                rejected: port == "0",
                dir: Dir::SendRecv,
                usable: false,
                mid: None,
            });
        } else if let Some(s) = section.as_mut() {
            match line {
                "a=sendonly" => s.dir = Dir::Send,
                "a=recvonly" => s.dir = Dir::Recv,
                "a=inactive" => s.dir = Dir::Inactive,
                "a=sendrecv" => s.dir = Dir::SendRecv,
                _ => {
                    if let Some(mid) = line.strip_prefix("a=mid:") {
                        s.mid = Some(mid.trim().to_string());
                    } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
                        let codec = map
                            .split(' ')
                            .nth(1)
                            .and_then(|c| c.split('/').next())
                            .unwrap_or("")
                            .to_ascii_lowercase();
                        if USABLE.contains(&codec.as_str()) {
                            s.usable = true;
                        }
                    }
                }
            }
        }
    }
    if let Some(s) = section.take() {
        s.finish(&mut out);
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Send,
    Recv,
    SendRecv,
    Inactive,
}

struct Section {
    media: bool,
    data: bool,
    rejected: bool,
    dir: Dir,
    usable: bool,
    mid: Option<String>,
}

impl Section {
    fn finish(self, out: &mut OfferSummary) {
        let sends = !self.rejected && matches!(self.dir, Dir::Send | Dir::SendRecv);
        if self.media && !sends && out.silent_mids.len() < MAX_SILENT_MIDS {
            if let Some(mid) = self.mid {
                out.silent_mids.push(mid);
            }
        }
        if self.rejected {
            return;
        }
        if self.data {
            out.data = true;
        }
        if !self.media {
            return;
        }
        out.media += 1;
        if self.usable {
            out.usable += 1;
        }
        if matches!(self.dir, Dir::Send | Dir::SendRecv) {
            out.sends += 1;
        }
        if matches!(self.dir, Dir::Recv | Dir::SendRecv) {
            out.receives += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 98\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:98 VP9/90000\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    #[test]
    fn counts_directions_codecs_and_data() {
        let s = inspect_offer(OFFER).expect("valid");
        assert_eq!(
            s,
            OfferSummary {
                sends: 1,
                receives: 1,
                usable: 2,
                media: 2,
                data: true,
                silent_mids: vec![],
            }
        );
    }

    #[test]
    fn sections_that_stopped_sending_are_named() {
        let sdp = "v=0\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=inactive\r\na=rtpmap:96 VP8/90000\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:4\r\n";
        let s = inspect_offer(sdp).expect("valid");
        assert_eq!(s.silent_mids, vec!["2".to_string(), "3".to_string()]);
        assert_eq!((s.sends, s.receives, s.media), (1, 1, 2));
    }

    #[test]
    fn no_usable_codec_is_seen() {
        let sdp = OFFER
            .replace("opus/48000/2", "G729/8000")
            .replace("VP8/90000", "AV1/90000");
        assert_eq!(inspect_offer(&sdp).expect("valid").usable, 0);
    }

    #[test]
    fn garbage_and_huge_offers_are_refused() {
        assert!(inspect_offer("hello").is_err());
        assert!(inspect_offer(&"v=0\r\n".repeat(20_000)).is_err());
        assert!(inspect_offer("").is_err());
    }
}
