//! `aula ladder show|validate|tune`, run as a user would.

mod common;

use common::{aula, tempdir};

#[test]
fn show_lists_every_shipped_profile() {
    let out = aula().args(["ladder", "show"]).output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "global",
        "latam-mobile",
        "south-asia-3g",
        "africa-3g",
        "na-eu-broadband",
    ] {
        assert!(
            text.contains(&format!("{name} (")),
            "{name} missing:\n{text}"
        );
    }
    assert!(text.contains("avc1.42c01e"), "{text}");
}

#[test]
fn validate_names_the_bad_field_and_fails() {
    let dir = tempdir("ladder-validate");
    let good = dir.join("good.toml");
    let bad = dir.join("bad.toml");
    let out = aula()
        .args(["ladder", "show", "africa-3g"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ladders/profiles/africa-3g.toml"
    ))
    .expect("profile");
    std::fs::write(&good, &src).expect("write");
    std::fs::write(&bad, src.replacen("level = \"3.0\"", "level = \"1.0\"", 1)).expect("write");
    let out = aula()
        .args(["ladder", "validate"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = aula()
        .args(["ladder", "validate"])
        .arg(&good)
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rung[0].level"), "{err}");
    assert!(err.contains("1 of 2 profiles invalid"), "{err}");
}

/// Real probe encodes of a synthetic clip with aula's x264 settings, measured by ffmpeg: the
/// tuned ladder for the africa-3g distribution beats the shipped global profile on expected
/// quality, stalls and data per viewer-hour.
#[test]
fn tune_beats_the_global_profile_on_a_3g_distribution() {
    let dir = tempdir("ladder-tune");
    let toml = dir.join("tuned.toml");
    let out = aula()
        .args([
            "ladder",
            "tune",
            "--geo",
            "africa-3g",
            "--test-clip",
            "640x360x3",
            "--heights",
            "144,234,360",
            "--bitrates",
            "60,100,160,250,400,650,1000",
            "--rungs",
            "4",
            "--json",
            "--out",
        ])
        .arg(&toml)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    eprintln!("{v:#}");
    let (t, c) = (&v["tuned"], &v["compare"]);
    let f = |x: &serde_json::Value, k: &str| x[k].as_f64().unwrap_or(f64::NAN);
    assert_eq!(c["name"], "global");
    assert!(f(t, "psnr") > f(c, "psnr"), "expected quality");
    assert!(f(t, "stall_share") < f(c, "stall_share"), "stalls");
    assert!(
        f(t, "mb_per_viewer_hour") < f(c, "mb_per_viewer_hour"),
        "data per viewer-hour"
    );
    assert!(
        err.contains("probe ") && err.contains("PSNR"),
        "progress is printed"
    );
    let out = aula()
        .args(["ladder", "validate"])
        .arg(&toml)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "the written profile validates: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
