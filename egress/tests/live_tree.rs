//! A 20 s live egress job (test pattern RTP -> transcoder -> packager -> uploader) into the filesystem and into
//! a real S3 server (moto on loopback): ffprobe reads the master and every rendition; the event
//! playlist becomes VOD. With the S3 server frozen for 10 s mid-run, no segment is lost and no
//! playlist ever names an object that is not there.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hls::{FsStore, Store};
use m3u8_rs::parse_media_playlist_res;

fn check_vod(text: &str, min_segments: usize) {
    let pl = parse_media_playlist_res(text.as_bytes()).expect("vod parses");
    assert!(pl.end_list, "VOD ends with EXT-X-ENDLIST");
    assert_eq!(pl.media_sequence, 0);
    assert!(
        pl.segments.len() >= min_segments,
        "{} segments",
        pl.segments.len()
    );
    for (i, s) in pl.segments.iter().enumerate() {
        assert!(
            s.uri.ends_with(&format!("-{i}.m4s")),
            "gap at {i}: {}",
            s.uri
        );
        assert!((s.duration.round() as u64) <= pl.target_duration);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_tree_plays() {
    let dir = std::env::temp_dir().join(format!("aula-hls-fs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::Fs(FsStore::new(&dir)));
    let (e, id) = start_job(store, "math", 20, settings());
    let status = finished(&e, &id).await;
    let root = dir.join("math").join(&id);
    check_probe(&root.join("master.m3u8").to_string_lossy());
    check_probe(&root.join("vod.m3u8").to_string_lossy());
    let vod = std::fs::read_to_string(root.join("vod.m3u8")).expect("vod master");
    for t in recorded(&vod, &status) {
        let text =
            std::fs::read_to_string(root.join(format!("{t}-vod.m3u8"))).expect("vod playlist");
        check_vod(&text, 8);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_tree_survives_a_frozen_bucket() {
    let moto = Moto::start();
    let store = Arc::new(moto.store("aula-hls").await);
    let (e, id) = start_job(store.clone(), "math", 24, settings());
    let prefix = format!("math/{id}");
    // The outage runs on its own clock: the job's loop is the one held up by backpressure.
    let frozen = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let outage = {
        let (frozen, pid) = (frozen.clone(), moto.pid());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(6));
            frozen.store(true, Ordering::SeqCst);
            signal(pid, "-STOP");
            std::thread::sleep(Duration::from_secs(10));
            signal(pid, "-CONT");
            frozen.store(false, Ordering::SeqCst);
        })
    };
    // A viewer's view, through the S3 API: every URI the live playlist names is already stored.
    let watcher = {
        let (frozen, done, cfg) = (frozen.clone(), done.clone(), moto.config("aula-hls"));
        let prefix = prefix.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let store = Store::S3(hls::S3Store::new(&cfg));
                let mut seen = HashSet::new();
                while !done.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if frozen.load(Ordering::SeqCst) {
                        continue;
                    }
                    let Ok(Some(body)) = store.get(&format!("{prefix}/v2.m3u8")).await else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&body).into_owned();
                    for uri in named(&text) {
                        if frozen.load(Ordering::SeqCst) || !seen.insert(uri.clone()) {
                            continue;
                        }
                        match store.get(&format!("{prefix}/{uri}")).await {
                            Ok(Some(_)) => {}
                            Ok(None) => {
                                panic!("the live playlist names {uri}, which is not stored")
                            }
                            Err(_) => {
                                seen.remove(&uri); // frozen mid-check: look again later
                            }
                        }
                    }
                }
                seen.len()
            })
        })
    };
    let status = finished(&e, &id).await;
    done.store(true, Ordering::SeqCst);
    outage.join().expect("outage thread");
    let checked = watcher.join().expect("no playlist named a missing object");
    eprintln!("job: {status:?}, checked {checked} URIs live");
    assert!(status.upload_failed_attempts > 0, "the outage was felt");
    assert!(status.upload_blocked_ms > 0, "backpressure held the job");
    assert!(checked > 30, "only {checked} URIs checked");
    // Nothing lost: mirror what the playlists name (every object must exist) and play it.
    let dir = std::env::temp_dir().join(format!("aula-hls-s3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for master in ["master.m3u8", "vod.m3u8"] {
        mirror(&store, &prefix, master, &dir).await;
    }
    let vod = std::fs::read_to_string(dir.join("vod.m3u8")).expect("vod master");
    for t in recorded(&vod, &status) {
        let text = std::fs::read_to_string(dir.join(format!("{t}-vod.m3u8"))).expect("vod");
        check_vod(&text, 10);
    }
    check_probe(&dir.join("master.m3u8").to_string_lossy());
    check_probe(&dir.join("vod.m3u8").to_string_lossy());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_recording_old_segments_are_deleted() {
    let dir = std::env::temp_dir().join(format!("aula-hls-del-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::Fs(FsStore::new(&dir)));
    let s = egress::HlsSettings {
        keep_recording: false,
        window: 3,
        ..settings()
    };
    let (e, id) = start_job(store, "math", 20, s);
    let status = finished(&e, &id).await;
    let root = dir.join("math").join(&id);
    assert!(!root.join("vod.m3u8").exists() && !root.join("v2-vod.m3u8").exists());
    let text = std::fs::read_to_string(root.join("v2.m3u8")).expect("live playlist");
    let pl = parse_media_playlist_res(text.as_bytes()).expect("parses");
    assert!(pl.end_list && pl.segments.len() == 3, "{text}");
    for uri in named(&text) {
        assert!(root.join(&uri).exists(), "{uri} is named but gone");
    }
    // A window of 3 kept twice over: the oldest segments and their parts were deleted.
    let first = format!("v2/{}-0.m4s", status.epoch);
    let first_part = format!("v2/{}-0.0.m4s", status.epoch);
    assert!(!root.join(&first).exists(), "{first} still stored");
    assert!(
        !root.join(&first_part).exists(),
        "{first_part} still stored"
    );
    check_probe(&root.join("master.m3u8").to_string_lossy());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The renditions the VOD master lists: the lowest rung and audio always; a higher rung only
/// missing when the job shed it (three egress tests share two cores, so it may).
fn recorded(vod_master: &str, status: &egress::JobStatus) -> Vec<String> {
    let listed: Vec<String> = named(vod_master)
        .into_iter()
        .filter_map(|u| u.strip_suffix("-vod.m3u8").map(str::to_string))
        .collect();
    for t in ["v0", "audio"] {
        assert!(listed.iter().any(|l| l == t), "{t} missing:\n{vod_master}");
    }
    for t in ["v1", "v2"] {
        assert!(
            listed.iter().any(|l| l == t) || status.shed_rungs.iter().any(|s| s == t),
            "{t} neither recorded nor shed: {status:?}\n{vod_master}"
        );
    }
    listed
}

/// URIs a playlist names (lines and URI="..." attributes), without the preload hint.
fn named(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    // A gap (a rung shed while the job was short of CPU) names a URI no player fetches.
    let mut gap = false;
    for line in text.lines() {
        if line.starts_with("#EXT-X-PRELOAD-HINT") {
            continue;
        }
        if line == "#EXT-X-GAP" {
            gap = true;
        } else if let Some(i) = line.find("URI=\"") {
            out.extend(line[i + 5..].split('"').next().map(str::to_string));
        } else if !line.starts_with('#') && !line.is_empty() && !std::mem::take(&mut gap) {
            out.push(line.to_string());
        }
    }
    out
}

/// Copies a playlist and everything it names (recursively) from the bucket into `dir`.
async fn mirror(store: &Store, prefix: &str, key: &str, dir: &std::path::Path) {
    let mut todo = vec![key.to_string()];
    while let Some(k) = todo.pop() {
        let path = dir.join(&k);
        if path.exists() {
            continue;
        }
        let body = store
            .get(&format!("{prefix}/{k}"))
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{k} is named but not stored"));
        if k.ends_with(".m3u8") {
            todo.extend(named(&String::from_utf8_lossy(&body)));
        }
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, body).expect("write");
    }
}
