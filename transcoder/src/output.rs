//! What a transcoder hands out: init segments, parts (CMAF chunks) with timing and keyframe
//! flags, and status events.

use std::fmt;
use std::time::{Duration, SystemTime};

use gstreamer as gst;

/// One output track: a video rung (index into the ladder) or the audio track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RenditionId {
    Video(usize),
    Audio,
}

impl fmt::Display for RenditionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenditionId::Video(i) => write!(f, "v{i}"),
            RenditionId::Audio => f.write_str("audio"),
        }
    }
}

/// The CMAF header (`ftyp` + `moov`) of a rendition.
#[derive(Clone, Debug)]
pub struct InitSegment {
    pub rendition: RenditionId,
    pub data: Vec<u8>,
    /// RFC 6381 codec string.
    pub codecs: String,
    /// Video size; 0 for audio.
    pub width: u32,
    pub height: u32,
}

/// One CMAF chunk (`moof` + `mdat`). A part with `independent` set starts a segment with a
/// keyframe; the parts up to the next independent one make up that segment.
#[derive(Clone, Debug)]
pub struct Part {
    pub rendition: RenditionId,
    /// The `mfhd` sequence number: the segment this part belongs to.
    pub sequence: u64,
    pub independent: bool,
    /// Presentation time of the first sample, on the job's clock.
    pub pts: Duration,
    pub duration: Duration,
    /// Wall-clock time of `pts` (for EXT-X-PROGRAM-DATE-TIME).
    pub wallclock: SystemTime,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug)]
pub enum Event {
    Init(InitSegment),
    Part(Part),
    /// A depayloader lost a keyframe's packets: ask the sender for a keyframe (PLI).
    KeyframeRequest,
    /// Input arrives but this rendition produced nothing for `silent_for`.
    Stalled {
        rendition: RenditionId,
        silent_for: Duration,
    },
    Resumed {
        rendition: RenditionId,
    },
    /// A pipeline element failed; the job should be ended or restarted.
    Error {
        element: String,
        message: String,
    },
    /// End of stream: every track drained after `Transcoder::finish`.
    Finished,
}

/// Splits one `cmafmux` output list into an optional init segment and a part.
pub(crate) struct Chunk {
    pub init: Option<Vec<u8>>,
    pub independent: bool,
    pub sequence: u64,
    pub pts: Duration,
    pub duration: Duration,
    pub data: Vec<u8>,
}

pub(crate) fn split_list<'a>(list: impl Iterator<Item = &'a gst::BufferRef>) -> Option<Chunk> {
    let mut init = None;
    let mut chunk: Option<Chunk> = None;
    for buf in list {
        let Ok(map) = buf.map_readable() else {
            continue;
        };
        let flags = buf.flags();
        if chunk.is_none()
            && flags.contains(gst::BufferFlags::HEADER | gst::BufferFlags::DISCONT)
            && init.is_none()
        {
            init = Some(map.as_slice().to_vec());
            continue;
        }
        match chunk.as_mut() {
            None => {
                // The fragment (or chunk) header: timing and whether it starts a segment.
                chunk = Some(Chunk {
                    init: None,
                    independent: !flags.contains(gst::BufferFlags::DELTA_UNIT),
                    sequence: buf.offset(),
                    pts: Duration::from_nanos(buf.pts().map_or(0, |t| t.nseconds())),
                    duration: Duration::from_nanos(buf.duration().map_or(0, |t| t.nseconds())),
                    data: map.as_slice().to_vec(),
                })
            }
            Some(c) => c.data.extend_from_slice(map.as_slice()),
        }
    }
    match chunk {
        Some(mut c) => {
            c.init = init;
            Some(c)
        }
        None => init.map(|i| Chunk {
            init: Some(i),
            independent: false,
            sequence: 0,
            pts: Duration::ZERO,
            duration: Duration::ZERO,
            data: Vec::new(),
        }),
    }
}
