//! A source's picture size, read from its keyframes (VP8's frame header, H.264's sequence
//! parameter set), and the ladder cut to it: aula never encodes a rung above its source.
//! Sans-IO: bytes in, sizes out; every input is a client's and may be garbage.

use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitReader, ByteReader};
use ladders::{Ladder, Rung};

/// Width and height of a decoded picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
}

impl std::fmt::Display for FrameSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// The size a VP8 keyframe announces (RFC 6386 section 9.1); `None` for an interframe or a
/// frame too short or without the start code.
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<FrameSize> {
    let h = frame.get(..10)?;
    if h[0] & 1 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([h[6], h[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([h[8], h[9]]) & 0x3fff);
    (width > 0 && height > 0).then_some(FrameSize { width, height })
}

/// The size from the first sequence parameter set in an Annex B H.264 access unit.
pub fn h264_keyframe_size(frame: &[u8]) -> Option<FrameSize> {
    annexb_nals(frame)
        .filter(|n| n.first().is_some_and(|b| b & 0x1f == 7))
        .find_map(|nal| {
            let sps =
                SeqParameterSet::from_bits(BitReader::new(ByteReader::skipping_h264_header(nal)))
                    .ok()?;
            let (width, height) = sps.pixel_dimensions().ok()?;
            (width > 0 && height > 0 && width <= 16_384 && height <= 16_384)
                .then_some(FrameSize { width, height })
        })
}

/// The NAL units of an Annex B byte stream (split at 00 00 01 start codes).
fn annexb_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|s| {
            // The next start code, less a leading zero of a 4-byte one.
            let e = s - 3;
            if e > 0 && data[e - 1] == 0 {
                e - 1
            } else {
                e
            }
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| &data[s..e])
}

/// Whether `rung` fits in `source` on both sides (either orientation: a portrait phone source
/// is letterboxed into landscape rungs, so compare long with long and short with short).
pub fn fits(rung: &Rung, source: FrameSize) -> bool {
    let (rl, rs) = (rung.width.max(rung.height), rung.width.min(rung.height));
    let (sl, ss) = (
        source.width.max(source.height),
        source.width.min(source.height),
    );
    rl <= sl && rs <= ss
}

/// `ladder` without its rungs above `source` (the lowest rung stays, so there is always video),
/// and the names of the rungs it left out.
pub fn fit_ladder(ladder: &Ladder, source: FrameSize) -> (Ladder, Vec<String>) {
    let mut out = ladder.clone();
    let keep = ladder
        .rungs
        .iter()
        .filter(|r| fits(r, source))
        .count()
        .max(1);
    // Rungs are ordered low to high (validated), so what fits is a prefix.
    let dropped = out.rungs.split_off(keep.min(out.rungs.len()));
    (out, dropped.into_iter().map(|r| r.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp8_key(w: u16, h: u16) -> Vec<u8> {
        let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&w.to_le_bytes());
        f.extend_from_slice(&h.to_le_bytes());
        f.extend_from_slice(&[0; 20]);
        f
    }

    #[test]
    fn vp8_keyframes_give_their_size_and_interframes_none() {
        assert_eq!(
            vp8_keyframe_size(&vp8_key(1280, 720)),
            Some(FrameSize {
                width: 1280,
                height: 720
            })
        );
        // Scaling bits (the top two) are not part of the size.
        assert_eq!(
            vp8_keyframe_size(&vp8_key(640 | 0x4000, 360 | 0x8000)).map(|s| (s.width, s.height)),
            Some((640, 360))
        );
        let mut inter = vp8_key(1280, 720);
        inter[0] |= 1;
        assert_eq!(vp8_keyframe_size(&inter), None);
        assert_eq!(vp8_keyframe_size(&[0x10, 0x02]), None);
        assert_eq!(vp8_keyframe_size(&vp8_key(0, 720)), None);
    }

    /// SPS NAL units x264 writes (made with `ffmpeg -f lavfi -i testsrc=size=WxH -frames:v 1
    /// -pix_fmt yuv420p -c:v libx264 -profile:v P -f h264`): baseline 1280x720 (coded as 1280x720
    /// in 80x45 macroblocks) and high profile 640x360 (coded 368 rows, cropped to 360).
    const SPS_720P: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
        0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
    ];
    const SPS_360P_HIGH: &[u8] = &[
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
    ];

    #[test]
    fn h264_sps_gives_the_cropped_size() {
        let mut au = vec![0, 0, 0, 1];
        au.extend_from_slice(SPS_720P);
        au.extend_from_slice(&[
            0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1, 0x65, 0x88, 0x84,
        ]);
        assert_eq!(
            h264_keyframe_size(&au),
            Some(FrameSize {
                width: 1280,
                height: 720
            })
        );
        let mut high = vec![0, 0, 1];
        high.extend_from_slice(SPS_360P_HIGH);
        assert_eq!(
            h264_keyframe_size(&high),
            Some(FrameSize {
                width: 640,
                height: 360
            })
        );
        // Without the SPS (an interframe), or garbage: nothing, and no panic.
        assert_eq!(h264_keyframe_size(&[0, 0, 0, 1, 0x41, 0x9a, 0x02]), None);
        assert_eq!(h264_keyframe_size(&[0, 0, 1]), None);
        assert_eq!(h264_keyframe_size(&[]), None);
    }

    #[test]
    fn parsers_never_panic_on_random_or_mutated_bytes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let mut base = vec![0, 0, 0, 1];
        base.extend_from_slice(SPS_720P);
        for i in 0..50_000 {
            let data: Vec<u8> = if i % 2 == 0 {
                (0..rng.random_range(0..80)).map(|_| rng.random()).collect()
            } else {
                let mut m = if i % 4 == 1 {
                    base.clone()
                } else {
                    vp8_key(1280, 720)
                };
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..m.len());
                    m[at] = rng.random();
                }
                m.truncate(rng.random_range(0..=m.len()));
                m
            };
            if let Some(s) = h264_keyframe_size(&data) {
                assert!(s.width <= 16_384 && s.height <= 16_384);
            }
            let _ = vp8_keyframe_size(&data);
        }
    }

    #[test]
    fn the_ladder_is_cut_to_the_source_and_keeps_its_lowest_rung() {
        let global = ladders::shipped("global").expect("global");
        let top = |l: &Ladder| l.rungs.last().map(|r| r.height);
        let (l, dropped) = fit_ladder(
            &global,
            FrameSize {
                width: 1280,
                height: 720,
            },
        );
        assert_eq!(top(&l), Some(720));
        assert!(
            dropped.iter().all(|n| n.starts_with("1080p")),
            "{dropped:?}"
        );
        assert!(!dropped.is_empty());
        // Portrait 720x1280 fits the same rungs.
        let (p, _) = fit_ladder(
            &global,
            FrameSize {
                width: 720,
                height: 1280,
            },
        );
        assert_eq!(p.rungs.len(), l.rungs.len());
        // 640x480: 360p yes, 432p (768 wide) no.
        let (v, _) = fit_ladder(
            &global,
            FrameSize {
                width: 640,
                height: 480,
            },
        );
        assert_eq!(top(&v), Some(360));
        // Smaller than every rung: the lowest stays.
        let (t, _) = fit_ladder(
            &global,
            FrameSize {
                width: 160,
                height: 90,
            },
        );
        assert_eq!(t.rungs.len(), 1);
    }
}
