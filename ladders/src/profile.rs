//! The ladder profile format (TOML) and its types.

use serde::{Deserialize, Serialize};

use crate::h264_level::{H264Level, H264Profile};

/// One rendition of the ladder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    /// Short name used in object names and playlists, e.g. "360p".
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Frame-rate cap; a slower source keeps its own rate.
    pub fps: u32,
    /// Target video bitrate.
    pub bitrate_kbps: u32,
    pub profile: H264Profile,
    pub level: H264Level,
    /// Seconds between IDR frames; the same on every rung so segments align.
    pub keyframe_interval_s: f64,
}

impl Rung {
    /// Bits per pixel per frame at the target bitrate.
    pub fn bits_per_pixel(&self) -> f64 {
        self.bitrate_kbps as f64 * 1000.0
            / (self.width as f64 * self.height as f64 * self.fps as f64)
    }

    /// RFC 6381 codec string, e.g. `avc1.4d401f`.
    pub fn codecs(&self) -> String {
        let (idc, constraints) = self.profile.idc_and_constraints();
        format!("avc1.{idc:02x}{constraints:02x}{:02x}", self.level.idc())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSpec {
    /// Only "aac-lc" is produced.
    pub codec: String,
    pub bitrate_kbps: u32,
    pub sample_rate: u32,
    pub channels: u32,
}

impl AudioSpec {
    pub fn codecs(&self) -> &'static str {
        "mp4a.40.2"
    }
}

/// The network class a profile is built for; "3g" profiles must serve very slow links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[serde(rename = "3g")]
    ThreeG,
    Mobile,
    Broadband,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ladder {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub network: Network,
    /// Offer an audio-only variant in the master playlist.
    #[serde(default = "yes")]
    pub audio_only: bool,
    pub audio: AudioSpec,
    #[serde(rename = "rung")]
    pub rungs: Vec<Rung>,
}

fn yes() -> bool {
    true
}

impl Ladder {
    pub fn to_toml(&self) -> String {
        // Serialising plain structs of numbers and strings cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Keyframe interval shared by all rungs (validation guarantees they agree).
    pub fn keyframe_interval_s(&self) -> f64 {
        self.rungs.first().map_or(2.0, |r| r.keyframe_interval_s)
    }

    pub fn max_fps(&self) -> u32 {
        self.rungs.iter().map(|r| r.fps).max().unwrap_or(30)
    }

    /// Peak bandwidth of a variant (video rung plus audio), bit/s.
    pub fn variant_bandwidth(&self, rung: &Rung) -> u64 {
        (rung.bitrate_kbps as u64 + self.audio.bitrate_kbps as u64) * 1000
    }
}
