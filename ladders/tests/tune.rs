//! The optimiser on synthetic rate-quality data: hull, player model, and exact rung choice.

use ladders::tune::{convex_hull, evaluate, pick, rate, PlayerModel, ProbePoint};
use ladders::{Throughput, ThroughputError};

fn probe(h: u32, kbps: u32, psnr: f64) -> ProbePoint {
    ProbePoint {
        width: h * 16 / 9 / 2 * 2,
        height: h,
        fps: 30,
        bitrate_kbps: kbps,
        actual_kbps: kbps as f64,
        psnr,
        ssim: psnr / 50.0,
        vmaf: None,
    }
}

/// A plausible rate-quality surface: each resolution saturates, bigger ones start lower.
fn surface() -> Vec<ProbePoint> {
    let mut out = Vec::new();
    for (h, ceiling, knee) in [
        (144u32, 33.0, 80.0),
        (240, 36.0, 200.0),
        (360, 39.0, 500.0),
        (540, 41.0, 1200.0),
        (720, 43.0, 2500.0),
    ] {
        for kbps in [60u32, 100, 150, 250, 400, 600, 900, 1400, 2200, 3500, 5000] {
            let q = ceiling - (ceiling - 22.0) * (-(kbps as f64) / knee).exp();
            out.push(probe(h, kbps, q));
        }
    }
    out
}

#[test]
fn hull_is_increasing_and_concave() {
    let hull = convex_hull(&surface());
    assert!(hull.len() >= 4);
    for w in hull.windows(2) {
        assert!(w[1].actual_kbps > w[0].actual_kbps && w[1].quality() > w[0].quality());
    }
    for w in hull.windows(3) {
        let s1 = (w[1].quality() - w[0].quality()) / (w[1].actual_kbps - w[0].actual_kbps);
        let s2 = (w[2].quality() - w[1].quality()) / (w[2].actual_kbps - w[1].actual_kbps);
        assert!(s2 <= s1 + 1e-12, "not concave");
    }
    // Low bitrates are served by small resolutions, high ones by large.
    assert!(hull[0].height < hull[hull.len() - 1].height);
}

#[test]
fn pick_matches_brute_force() {
    let hull = convex_hull(&surface());
    let t = Throughput::from_percentiles(&[
        (5.0, 150.0),
        (25.0, 400.0),
        (50.0, 750.0),
        (75.0, 1500.0),
        (95.0, 4500.0),
    ])
    .expect("table");
    let m = PlayerModel::default();
    for k in 1..=4 {
        let got = pick(&hull, k, 48, &t, &m);
        assert!(!got.is_empty() && got.len() <= k);
        let got_score =
            evaluate(&got.iter().map(|p| rate(p, 48)).collect::<Vec<_>>(), &t, &m).score;
        // Every subset of size <= k, in bandwidth order with resolution not going down.
        let n = hull.len();
        let mut best = f64::NEG_INFINITY;
        for mask in 1u32..(1 << n) {
            if mask.count_ones() as usize > k {
                continue;
            }
            let sel: Vec<_> = (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| hull[i].clone())
                .collect();
            if sel
                .windows(2)
                .any(|w| w[1].width * w[1].height < w[0].width * w[0].height)
            {
                continue;
            }
            let s = evaluate(&sel.iter().map(|p| rate(p, 48)).collect::<Vec<_>>(), &t, &m).score;
            best = best.max(s);
        }
        assert!(
            (got_score - best).abs() < 1e-9,
            "k={k}: dp {got_score} vs brute {best}"
        );
    }
}

#[test]
fn player_model_stalls_below_the_lowest_rung_and_counts_data() {
    let rungs = vec![
        rate(&probe(240, 400, 35.0), 100),
        rate(&probe(480, 1000, 40.0), 100),
    ];
    let m = PlayerModel::default();
    // Everyone at 250 kbit/s: plays the 500 kbit/s variant, stalled half the time.
    let t = Throughput::from_samples(&[250.0]).expect("one sample");
    let e = evaluate(&rungs, &t, &m);
    assert!((e.stall_share - 0.5).abs() < 1e-9);
    assert!((e.mb_per_viewer_hour - 250.0 * 3600.0 / 8000.0).abs() < 1e-6);
    // At 1,500 kbit/s: 0.7 x 1500 = 1050 < 1100, so hls.js stays on the lower rung.
    let t = Throughput::from_samples(&[1500.0]).expect("one sample");
    let e = evaluate(&rungs, &t, &m);
    assert_eq!(e.rung_share, vec![1.0, 0.0]);
    assert_eq!(e.stall_share, 0.0);
}

#[test]
fn throughput_csv_errors_name_the_line() {
    let e: ThroughputError =
        Throughput::from_csv("percentile,kbps\n5,100\nfifty,200\n", "t.csv").expect_err("bad");
    assert_eq!(e.line, 3);
    let e = Throughput::from_csv("speed\n1\n", "t.csv").expect_err("bad header");
    assert!(e.to_string().contains("unknown header"), "{e}");
    let e =
        Throughput::from_csv("percentile,kbps\n5,500\n50,100\n", "t.csv").expect_err("decreasing");
    assert!(e.to_string().contains("not decreasing"), "{e}");
    let t = Throughput::from_csv("kbps\n100\n300\n200\n", "t.csv").expect("samples");
    assert_eq!(t.percentile(50.0), 200.0);
    let t = Throughput::from_csv("# c\npercentile,kbps\n0,100\n100,300\n", "t.csv").expect("table");
    assert!((t.percentile(50.0) - 200.0).abs() < 2.0);
}

/// Mutated CSV and TOML never panic: they parse or fail with a message.
#[test]
fn mutated_inputs_never_panic() {
    let csv = ladders::SHIPPED[3].2.as_bytes().to_vec();
    let toml = ladders::SHIPPED[0].1.as_bytes().to_vec();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..3000 {
        let base = if round % 2 == 0 { &csv } else { &toml };
        let mut b = base.clone();
        for _ in 0..(next() % 8 + 1) {
            let i = (next() as usize) % b.len();
            match next() % 3 {
                0 => b[i] = next() as u8,
                1 => {
                    b.remove(i);
                }
                _ => b.insert(i, b"0123456789.,-\n=[]\"e"[(next() % 19) as usize]),
            }
        }
        let text = String::from_utf8_lossy(&b);
        let _ = Throughput::from_csv(&text, "fuzz");
        let _ = ladders::Ladder::from_toml(&text, "fuzz");
    }
}
