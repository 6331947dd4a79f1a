//! Profile parsing and validation: every violation is reported with the field it concerns.

use std::collections::HashSet;
use std::fmt;

use crate::profile::{Ladder, Network};

/// The lowest rung a 3G profile must offer, kbit/s of video.
pub const THREE_G_MAX_LOWEST_KBPS: u32 = 300;
/// Bits per pixel outside this range is either wasted data or mush.
pub const BPP_RANGE: (f64, f64) = (0.015, 0.5);

#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// The field, e.g. `rung[2].bitrate_kbps` or `audio.sample_rate`.
    pub field: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct ValidationError {
    pub profile: String,
    pub violations: Vec<Violation>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ladder profile {:?} is invalid:", self.profile)?;
        for v in &self.violations {
            write!(f, "\n  {}: {}", v.field, v.message)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("ladder profile {origin}: {message}")]
    Toml { origin: String, message: String },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl Ladder {
    /// Parses and validates a profile; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Ladder, ParseError> {
        let ladder: Ladder = toml::from_str(text).map_err(|e| ParseError::Toml {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        ladder.validate()?;
        Ok(ladder)
    }

    /// Every rule a profile must keep (see [`validate`]).
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate(self)
    }
}

pub fn validate(l: &Ladder) -> Result<(), ValidationError> {
    let mut out = Vec::new();
    let mut bad = |field: String, message: String| out.push(Violation { field, message });

    if l.name.is_empty()
        || !l
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bad(
            "name".into(),
            format!("{:?} must be lowercase letters, digits and '-'", l.name),
        );
    }
    if l.rungs.is_empty() {
        bad("rung".into(), "a ladder needs at least one rung".into());
    }
    let mut names = HashSet::new();
    for (i, r) in l.rungs.iter().enumerate() {
        let f = |name: &str| format!("rung[{i}].{name}");
        if r.name.is_empty()
            || !r
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bad(
                f("name"),
                format!("{:?} must be letters, digits, '-' or '_'", r.name),
            );
        }
        if !names.insert(r.name.as_str()) {
            bad(f("name"), format!("{:?} is used by two rungs", r.name));
        }
        for (field, v) in [("width", r.width), ("height", r.height)] {
            if !(16..=4096).contains(&v) || v % 2 != 0 {
                bad(f(field), format!("{v} must be even and within 16..=4096"));
            }
        }
        if !(1..=60).contains(&r.fps) {
            bad(f("fps"), format!("{} must be within 1..=60", r.fps));
        }
        if !(16..=100_000).contains(&r.bitrate_kbps) {
            bad(
                f("bitrate_kbps"),
                format!("{} must be within 16..=100000", r.bitrate_kbps),
            );
        }
        if r.width > 0 && r.height > 0 && r.fps > 0 {
            let bpp = r.bits_per_pixel();
            if bpp < BPP_RANGE.0 || bpp > BPP_RANGE.1 {
                bad(
                    f("bitrate_kbps"),
                    format!(
                        "{} kbit/s at {}x{}@{} is {bpp:.3} bits per pixel; sane is {}..{}",
                        r.bitrate_kbps, r.width, r.height, r.fps, BPP_RANGE.0, BPP_RANGE.1
                    ),
                );
            }
            if let Err(why) =
                r.level
                    .check(r.profile, r.width, r.height, r.fps as f64, r.bitrate_kbps)
            {
                bad(f("level"), why);
            }
        }
        let kf = r.keyframe_interval_s;
        if !(0.5..=10.0).contains(&kf) {
            bad(
                f("keyframe_interval_s"),
                format!("{kf} must be within 0.5..=10 seconds"),
            );
        } else if ((kf * r.fps as f64).round() - kf * r.fps as f64).abs() > 1e-6 {
            bad(
                f("keyframe_interval_s"),
                format!("{kf} s is not a whole number of frames at {} fps", r.fps),
            );
        }
        if i > 0 {
            let p = &l.rungs[i - 1];
            if r.bitrate_kbps <= p.bitrate_kbps {
                bad(
                    f("bitrate_kbps"),
                    format!(
                        "{} must be above rung[{}]'s {} (rungs go from lowest to highest)",
                        r.bitrate_kbps,
                        i - 1,
                        p.bitrate_kbps
                    ),
                );
            }
            if (r.width as u64 * r.height as u64) < (p.width as u64 * p.height as u64) {
                bad(
                    f("width"),
                    format!(
                        "{}x{} is smaller than rung[{}]'s {}x{}",
                        r.width,
                        r.height,
                        i - 1,
                        p.width,
                        p.height
                    ),
                );
            }
            if (r.keyframe_interval_s - p.keyframe_interval_s).abs() > 1e-9 {
                bad(
                    f("keyframe_interval_s"),
                    format!(
                        "{} differs from rung[{}]'s {}: segments must align across rungs",
                        r.keyframe_interval_s,
                        i - 1,
                        p.keyframe_interval_s
                    ),
                );
            }
        }
    }
    let a = &l.audio;
    if a.codec != "aac-lc" {
        bad(
            "audio.codec".into(),
            format!("{:?} is not supported (aac-lc)", a.codec),
        );
    }
    if !(16..=320).contains(&a.bitrate_kbps) {
        bad(
            "audio.bitrate_kbps".into(),
            format!("{} must be within 16..=320", a.bitrate_kbps),
        );
    }
    if ![44_100, 48_000].contains(&a.sample_rate) {
        bad(
            "audio.sample_rate".into(),
            format!("{} must be 44100 or 48000", a.sample_rate),
        );
    }
    if !(1..=2).contains(&a.channels) {
        bad(
            "audio.channels".into(),
            format!("{} must be 1 or 2", a.channels),
        );
    }
    if l.network == Network::ThreeG {
        if let Some(lowest) = l.rungs.first() {
            if lowest.bitrate_kbps > THREE_G_MAX_LOWEST_KBPS {
                bad(
                    "rung[0].bitrate_kbps".into(),
                    format!("a 3g profile needs a rung at or under {THREE_G_MAX_LOWEST_KBPS} kbit/s; the lowest is {}", lowest.bitrate_kbps),
                );
            }
        }
        if !l.audio_only {
            bad(
                "audio_only".into(),
                "a 3g profile must offer the audio-only variant".into(),
            );
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            profile: l.name.clone(),
            violations: out,
        })
    }
}
