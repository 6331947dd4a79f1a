//! Probe encodes with the live x264 settings, measured by ffmpeg's PSNR and SSIM.

mod common;

use transcoder::probe::{encode, make_test_clip, measure};

#[test]
fn probe_encodes_hit_their_bitrate_and_quality_rises_with_it() {
    let dir = std::env::temp_dir().join(format!("aula-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let clip = dir.join("clip.mp4");
    make_test_clip(&clip, 640, 360, 30, 3).expect("clip");
    let ladder = common::test_ladder();
    let mut last_psnr = 0.0;
    for rung in &ladder.rungs {
        let out = dir.join(format!("{}.mp4", rung.name));
        let e = encode(&clip, rung, "veryfast", &out).expect("encode");
        let q = measure(&out, &clip, 640, 360).expect("measure");
        eprintln!(
            "{}: {} frames, {:.0} kbit/s, PSNR {:.2} SSIM {:.4}",
            rung.name,
            e.frames,
            e.kbps(),
            q.psnr,
            q.ssim
        );
        assert_eq!(e.frames, 3 * rung.fps as u64);
        assert!(
            e.kbps() < rung.bitrate_kbps as f64 * 1.3,
            "{} over budget",
            rung.name
        );
        assert!(q.psnr > last_psnr, "quality rises up the ladder");
        assert!(q.ssim > 0.3 && q.ssim <= 1.0);
        last_psnr = q.psnr;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
