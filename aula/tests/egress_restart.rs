//! A process restart mid-broadcast: `aula egress run` is killed (SIGKILL) while live, run again
//! for the same broadcast, and the recording continues after one discontinuity with new object
//! names; every object a playlist names exists; ffprobe reads the result; an ended broadcast is
//! not continued.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{aula, tempdir};

fn segments(playlist: &Path) -> usize {
    std::fs::read_to_string(playlist)
        .map(|t| t.lines().filter(|l| l.starts_with("#EXTINF")).count())
        .unwrap_or(0)
}

#[test]
fn killed_job_continues_after_a_discontinuity() {
    let dir = tempdir("egress-restart");
    let run = |extra: &[&str]| {
        let mut c = aula();
        c.current_dir(&dir)
            .env("AULA_STORAGE__DIR", dir.join("data"))
            .env("RUST_LOG", "warn")
            .args(["egress", "run", "--room", "math", "--profile", "test"])
            .args(extra);
        c
    };
    let mut first = run(&["--seconds", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(first.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    // "egress job {id} prefix math/{id} epoch {epoch}"
    let id = line.split_whitespace().nth(2).expect("job id").to_string();
    let root = dir.join("data/hls/math").join(&id);
    let t = Instant::now();
    while segments(&root.join("v2-vod.m3u8")) < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no segments from the first run"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let before = segments(&root.join("v2-vod.m3u8"));

    let second = run(&["--broadcast", &id, "--seconds", "8"])
        .output()
        .expect("second run");
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let out = String::from_utf8_lossy(&second.stdout);
    let status: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or("")).expect("final status JSON");
    assert_eq!(status["state"], "ended");
    assert!(
        status["resumed_segments"].as_u64().unwrap_or(0) >= 3,
        "{status}"
    );

    for track in ["v0", "v1", "v2", "audio"] {
        let text = std::fs::read_to_string(root.join(format!("{track}-vod.m3u8"))).expect("vod");
        let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("parses");
        assert!(pl.end_list);
        let disc: Vec<usize> = (0..pl.segments.len())
            .filter(|&i| pl.segments[i].discontinuity)
            .collect();
        assert_eq!(disc.len(), 1, "{track}: one discontinuity\n{text}");
        let maps: Vec<&str> = pl
            .segments
            .iter()
            .filter_map(|s| s.map.as_ref().map(|m| m.uri.as_str()))
            .collect();
        assert_eq!(maps.len(), 2, "{track}: an init segment per run\n{text}");
        assert_ne!(maps[0], maps[1]);
        for (i, s) in pl.segments.iter().enumerate() {
            assert!(
                s.uri.ends_with(&format!("-{i}.m4s")),
                "{track} gap: {}",
                s.uri
            );
            let gap = s.unknown_tags.iter().any(|t| t.tag == "X-GAP");
            assert!(gap || root.join(&s.uri).exists(), "{} missing", s.uri);
        }
        for m in maps {
            assert!(root.join(m).exists(), "{m} missing");
        }
        if track == "v2" {
            // The segment the first run had open is closed from its stored parts (or marked a
            // gap when it had none): its number was shown to viewers and is never reused.
            assert_eq!(
                disc[0],
                before + 1,
                "the discontinuity is right after the first run's open segment\n{text}"
            );
            assert!(pl.segments[before].map.is_none(), "{text}");
            assert!(pl.segments.len() >= before + 3);
        }
    }
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(root.join("vod.m3u8"))
        .output()
        .expect("ffprobe (scripts/install-deps.sh installs ffmpeg)");
    let streams = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success() && streams.contains("h264") && streams.contains("aac"),
        "{streams}"
    );

    // The broadcast has ended: a third run refuses to reopen it.
    let third = run(&["--broadcast", &id, "--seconds", "2"])
        .output()
        .expect("third run");
    assert!(!third.status.success());
    assert!(
        String::from_utf8_lossy(&third.stderr).contains("already ended"),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
