//! Where each rendition's pictures come from, and when a rung is letterboxed: pure decisions,
//! tested apart from GStreamer.
//!
//! GStreamer 1.22's `videoscale` (bilinear2) is as good as ffmpeg's `scale` up to ~3x but not
//! at 5x: measured on `bench/ladder`'s source, scaling alone (lossless encode), 1280x720 ->
//! 256x144 direct scored 29.51 dB PSNR against ffmpeg's 30.52, and 1.00 dB better (30.48)
//! through the 640x360 picture. Chaining every size from the next (720 -> 480 -> 360 -> 240 ->
//! 144) compounds blur instead (1.6-2.1 dB worse). So each size is scaled from the largest
//! larger size at most [`MAX_STEP`] times its height, and the largest from the source.

/// The largest height ratio one scaling step takes.
pub const MAX_STEP: f64 = 3.0;

/// A ladder's distinct picture sizes, largest first (rungs of one size share a scaler).
pub fn distinct_sizes(rungs: impl Iterator<Item = (u32, u32)>) -> Vec<(u32, u32)> {
    let mut sizes: Vec<(u32, u32)> = rungs.collect();
    sizes.sort_by_key(|(w, h)| std::cmp::Reverse(w * h));
    sizes.dedup();
    sizes
}

/// For each of `sizes` (largest first), the index of the size it is scaled from; `None` is the
/// source. `cascade: false` scales every size from the source.
pub fn scale_inputs(sizes: &[(u32, u32)], cascade: bool) -> Vec<Option<usize>> {
    sizes
        .iter()
        .enumerate()
        .map(|(k, &(_, h))| {
            if !cascade || k == 0 {
                return None;
            }
            // The largest larger size within one step; else the next larger one.
            (0..k)
                .find(|&j| f64::from(sizes[j].1) <= f64::from(h) * MAX_STEP)
                .or(Some(k - 1))
        })
        .collect()
}

/// Aspect ratios closer than this are stretched to the rung's size (invisible); further apart,
/// the picture is letterboxed or pillarboxed. Ladder sizes are rounded to even pixels (426x240
/// is 0.2% off 16:9): black borders there cost 3.1 dB PSNR on `bench/ladder`'s 240p rung for a
/// one-pixel line and a picture misplaced by a row.
pub const ASPECT_TOLERANCE: f64 = 0.01;

/// Whether a picture of `in_w` x `in_h` (pixel aspect `par_n/par_d`) gets borders to fit
/// `out_w` x `out_h` square pixels.
pub fn needs_borders(in_w: u32, in_h: u32, par: (i32, i32), out_w: u32, out_h: u32) -> bool {
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 || par.0 <= 0 || par.1 <= 0 {
        return false;
    }
    let dar_in = f64::from(in_w) * f64::from(par.0) / (f64::from(in_h) * f64::from(par.1));
    let dar_out = f64::from(out_w) / f64::from(out_h);
    (dar_in / dar_out - 1.0).abs() > ASPECT_TOLERANCE
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATAM: [(u32, u32); 5] = [(1280, 720), (854, 480), (640, 360), (426, 240), (256, 144)];

    #[test]
    fn each_size_comes_from_the_largest_within_three_times() {
        let sizes = distinct_sizes(LATAM.iter().rev().copied());
        assert_eq!(sizes, LATAM.to_vec());
        // 720 from the source; 480, 360 and 240 from 720 (1.5x, 2x, 3x); 144 from 360 (2.5x).
        assert_eq!(
            scale_inputs(&sizes, true),
            vec![None, Some(0), Some(0), Some(0), Some(2)]
        );
        assert_eq!(scale_inputs(&sizes, false), vec![None; 5]);
    }

    #[test]
    fn a_gap_wider_than_one_step_takes_the_next_larger_size() {
        let sizes = [(1920, 1080), (256, 144)];
        assert_eq!(scale_inputs(&sizes, true), vec![None, Some(0)]);
        assert_eq!(scale_inputs(&[], true), Vec::<Option<usize>>::new());
    }

    #[test]
    fn near_16_9_is_stretched_and_other_shapes_get_borders() {
        assert!(!needs_borders(1280, 720, (1, 1), 426, 240));
        assert!(!needs_borders(1280, 720, (1, 1), 854, 480));
        assert!(
            needs_borders(640, 480, (1, 1), 640, 360),
            "4:3 is pillarboxed"
        );
        assert!(
            needs_borders(720, 1280, (1, 1), 640, 360),
            "portrait is pillarboxed"
        );
        // Anamorphic: 1440x1080 with 4:3 pixels is 16:9.
        assert!(!needs_borders(1440, 1080, (4, 3), 1280, 720));
        assert!(!needs_borders(0, 720, (1, 1), 640, 360));
    }
}
