//! H.264 profiles and levels (ITU-T H.264 Table A-1), to check that a rung fits its level.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum H264Profile {
    Baseline,
    Main,
    High,
}

impl H264Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            H264Profile::Baseline => "baseline",
            H264Profile::Main => "main",
            H264Profile::High => "high",
        }
    }

    /// The `avc1.PPCCLL` profile_idc and constraint byte used in HLS `CODECS`.
    pub fn idc_and_constraints(self) -> (u8, u8) {
        match self {
            // Constrained baseline: constraint_set0 and set1.
            H264Profile::Baseline => (66, 0xc0),
            H264Profile::Main => (77, 0x40),
            H264Profile::High => (100, 0x00),
        }
    }

    /// cpbBrVclFactor / 1000 (Table A-1 bitrates are for baseline/main; High allows 1.25x).
    fn bitrate_factor(self) -> f64 {
        match self {
            H264Profile::High => 1.25,
            _ => 1.0,
        }
    }
}

impl fmt::Display for H264Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level such as "3.1", stored as level_idc (31).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H264Level {
    idc: u8,
    max_mbps: u32,
    max_fs: u32,
    max_br_kbps: u32,
}

// level_idc, MaxMBPS (macroblocks/s), MaxFS (macroblocks), MaxBR (kbit/s, baseline/main).
const LEVELS: &[(u8, u32, u32, u32)] = &[
    (10, 1_485, 99, 64),
    (11, 3_000, 396, 192),
    (12, 6_000, 396, 384),
    (13, 11_880, 396, 768),
    (20, 11_880, 396, 2_000),
    (21, 19_800, 792, 4_000),
    (22, 20_250, 1_620, 4_000),
    (30, 40_500, 1_620, 10_000),
    (31, 108_000, 3_600, 14_000),
    (32, 216_000, 5_120, 20_000),
    (40, 245_760, 8_192, 20_000),
    (41, 245_760, 8_192, 50_000),
    (42, 522_240, 8_704, 50_000),
    (50, 589_824, 22_080, 135_000),
    (51, 983_040, 36_864, 240_000),
    (52, 2_073_600, 36_864, 240_000),
];

impl H264Level {
    pub fn idc(self) -> u8 {
        self.idc
    }

    /// Why a rung does not fit this level, if it does not.
    pub fn check(
        self,
        profile: H264Profile,
        width: u32,
        height: u32,
        fps: f64,
        bitrate_kbps: u32,
    ) -> Result<(), String> {
        let mbs = width.div_ceil(16) * height.div_ceil(16);
        if mbs > self.max_fs {
            return Err(format!(
                "{width}x{height} is {mbs} macroblocks per frame; level {self} allows {}",
                self.max_fs
            ));
        }
        // A.3.1: neither dimension may exceed sqrt(8 * MaxFS) macroblocks.
        let max_dim = ((8 * self.max_fs) as f64).sqrt() as u32;
        if width.div_ceil(16) > max_dim || height.div_ceil(16) > max_dim {
            return Err(format!(
                "{width}x{height} exceeds level {self}'s longest side of {} pixels",
                max_dim * 16
            ));
        }
        let rate = mbs as f64 * fps;
        if rate > self.max_mbps as f64 {
            return Err(format!(
                "{width}x{height}@{fps} is {rate:.0} macroblocks/s; level {self} allows {}",
                self.max_mbps
            ));
        }
        let max_br = self.max_br_kbps as f64 * profile.bitrate_factor();
        if bitrate_kbps as f64 > max_br {
            return Err(format!(
                "{bitrate_kbps} kbit/s exceeds level {self}'s {max_br:.0} kbit/s for {profile}"
            ));
        }
        Ok(())
    }

    /// The highest level in the table (5.2).
    pub fn highest() -> H264Level {
        Self::from_row(LEVELS[LEVELS.len() - 1])
    }

    /// The lowest level this rung fits.
    pub fn lowest_for(
        profile: H264Profile,
        width: u32,
        height: u32,
        fps: f64,
        bitrate_kbps: u32,
    ) -> Option<H264Level> {
        LEVELS
            .iter()
            .map(|&l| Self::from_row(l))
            .find(|l| l.check(profile, width, height, fps, bitrate_kbps).is_ok())
    }

    fn from_row((idc, max_mbps, max_fs, max_br_kbps): (u8, u32, u32, u32)) -> Self {
        H264Level {
            idc,
            max_mbps,
            max_fs,
            max_br_kbps,
        }
    }
}

impl FromStr for H264Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let idc = match s.split_once('.') {
            Some((major, minor)) => {
                let major: u8 = major.parse().map_err(|_| format!("bad level {s:?}"))?;
                let minor: u8 = minor.parse().map_err(|_| format!("bad level {s:?}"))?;
                if minor > 9 {
                    return Err(format!("bad level {s:?}"));
                }
                major.saturating_mul(10).saturating_add(minor)
            }
            None => s
                .parse::<u8>()
                .map_err(|_| format!("bad level {s:?}"))?
                .saturating_mul(10),
        };
        LEVELS
            .iter()
            .find(|l| l.0 == idc)
            .map(|&l| Self::from_row(l))
            .ok_or_else(|| format!("unknown H.264 level {s:?} (1 to 5.2)"))
    }
}

impl fmt::Display for H264Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.idc / 10, self.idc % 10)
    }
}

impl Serialize for H264Level {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for H264Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
