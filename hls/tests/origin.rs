//! The built-in origin: signed prefixes (403 otherwise), byte ranges, content types and cache
//! policy, and LL-HLS blocking playlist reload.

use std::sync::Arc;
use std::time::Duration;

use hls::{FsStore, LiveIndex, Object, Origin, Position, SigningKeys, Store};

async fn origin() -> (Origin, SigningKeys, std::path::PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("aula-origin-{}-{}", std::process::id(), rand_id()));
    let store = Store::Fs(FsStore::new(&dir));
    store
        .put(&Object {
            key: "math/b1/v0.m3u8".into(),
            body: b"#EXTM3U\n".to_vec(),
        })
        .await
        .expect("put");
    store
        .put(&Object {
            key: "math/b1/v0/e1-0.m4s".into(),
            body: b"0123456789".to_vec(),
        })
        .await
        .expect("put");
    let keys = SigningKeys::new("k1", [("k1".to_string(), b"s".to_vec())]).expect("keys");
    (
        Origin::new(Arc::new(store), keys.clone(), LiveIndex::default()),
        keys,
        dir,
    )
}

fn rand_id() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

fn header<'a>(r: &'a hls::Response, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn serves_signed_paths_with_ranges_and_refuses_the_rest() {
    let (o, keys, dir) = origin().await;
    let t = keys.sign("/math/b1/", Duration::from_secs(60));
    let r = o
        .handle(&format!("/s/{t}/math/b1/v0.m3u8"), None, None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        header(&r, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(header(&r, "cache-control"), Some("public, max-age=1"));
    let r = o
        .handle(
            &format!("/s/{t}/math/b1/v0/e1-0.m4s"),
            None,
            Some("bytes=2-5"),
        )
        .await;
    assert_eq!((r.status, r.body.as_slice()), (206, &b"2345"[..]));
    assert_eq!(header(&r, "content-range"), Some("bytes 2-5/10"));
    assert_eq!(
        header(&r, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        o.handle(
            &format!("/s/{t}/math/b1/v0/e1-0.m4s"),
            None,
            Some("bytes=-3")
        )
        .await
        .body,
        b"789"
    );
    assert_eq!(
        o.handle(
            &format!("/s/{t}/math/b1/v0/e1-0.m4s"),
            None,
            Some("bytes=20-30")
        )
        .await
        .status,
        416
    );
    assert_eq!(
        o.handle(&format!("/s/{t}/math/b1/none.m4s"), None, None)
            .await
            .status,
        404
    );
    // A directory (the rendition's folder) is not an object: 404, not a storage error.
    for dir in ["/math/b1/v0", "/math/b1/v0/"] {
        assert_eq!(
            o.handle(&format!("/s/{t}{dir}"), None, None).await.status,
            404,
            "{dir}"
        );
    }
    // Missing, tampered, expired, foreign-prefix and unknown-key tokens.
    assert_eq!(o.handle("/math/b1/v0.m3u8", None, None).await.status, 403);
    let tampered = t.replacen('.', ".9", 1);
    assert_eq!(
        o.handle(&format!("/s/{tampered}/math/b1/v0.m3u8"), None, None)
            .await
            .status,
        403
    );
    let expired = keys.sign_until("/math/b1/", 1);
    assert_eq!(
        o.handle(&format!("/s/{expired}/math/b1/v0.m3u8"), None, None)
            .await
            .status,
        403
    );
    assert_eq!(
        o.handle(&format!("/s/{t}/history/b1/v0.m3u8"), None, None)
            .await
            .status,
        403
    );
    let other = SigningKeys::new("k2", [("k2".to_string(), b"s".to_vec())])
        .expect("keys")
        .sign("/math/b1/", Duration::from_secs(60));
    assert_eq!(
        o.handle(&format!("/s/{other}/math/b1/v0.m3u8"), None, None)
            .await
            .status,
        403
    );
    assert_eq!(
        o.handle(&format!("/s/{t}/math/b1/v0.m3u8"), Some("_HLS_msn=x"), None)
            .await
            .status,
        400
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn blocking_reload_waits_for_the_part() {
    let (o, keys, dir) = origin().await;
    let o = Arc::new(o);
    let t = keys.sign("/math/b1/", Duration::from_secs(60));
    let live = o.live().clone();
    live.publish(
        "math/b1/v0.m3u8",
        Position { msn: 5, part: 1 },
        Duration::from_millis(300),
    );
    // Already there: answered at once.
    let r = o
        .handle(
            &format!("/s/{t}/math/b1/v0.m3u8"),
            Some("_HLS_msn=5&_HLS_part=0"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    // Not yet there: held until the job publishes it.
    let waiting = {
        let (o, path) = (o.clone(), format!("/s/{t}/math/b1/v0.m3u8"));
        tokio::spawn(async move { o.handle(&path, Some("_HLS_msn=5&_HLS_part=2"), None).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "answered before the part existed");
    live.publish(
        "math/b1/v0.m3u8",
        Position { msn: 5, part: 3 },
        Duration::from_millis(300),
    );
    assert_eq!(waiting.await.expect("join").status, 200);
    // Never appearing within 3 target durations: 503. Far ahead of the live edge: 400.
    let r = o
        .handle(
            &format!("/s/{t}/math/b1/v0.m3u8"),
            Some("_HLS_msn=6&_HLS_part=2"),
            None,
        )
        .await;
    assert_eq!(r.status, 503);
    let r = o
        .handle(&format!("/s/{t}/math/b1/v0.m3u8"), Some("_HLS_msn=9"), None)
        .await;
    assert_eq!(r.status, 400);
    let _ = std::fs::remove_dir_all(dir);
}

/// Hostile requests: mutated tokens, paths, queries and ranges never panic and get a 2xx/4xx
/// answer; anything not signed for the prefix is refused.
#[tokio::test]
async fn fuzzed_requests_get_clear_answers() {
    let (o, keys, dir) = origin().await;
    let good = keys.sign("/math/b1/", Duration::from_secs(60));
    let base = format!("/s/{good}/math/b1/v0.m3u8");
    let alphabet: &[u8] = b"/.%?&=-_~abcXYZ019 \\\0\xff+:";
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut served = 0;
    for _ in 0..3000 {
        let mut path = base.clone().into_bytes();
        for _ in 0..(next() % 4) {
            let i = (next() as usize) % path.len();
            match next() % 3 {
                0 => path[i] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    path.remove(i);
                }
                _ => path.insert(i, alphabet[(next() as usize) % alphabet.len()]),
            }
        }
        let path = String::from_utf8_lossy(&path).into_owned();
        let query = match next() % 4 {
            0 => None,
            1 => Some(format!("_HLS_msn={}", next() % 5)),
            2 => Some(format!("_HLS_msn=x&_HLS_part={}", next())),
            _ => Some("_HLS_part=1".to_string()),
        };
        let range = match next() % 4 {
            0 => None,
            1 => Some(format!("bytes={}-{}", next() % 20, next() % 20)),
            2 => Some("bytes=-0".to_string()),
            _ => Some(format!("bytes={}", next())),
        };
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            o.handle(&path, query.as_deref(), range.as_deref()),
        )
        .await
        .expect("no request hangs (nothing is live here)");
        assert!((200..500).contains(&r.status), "{path}: {}", r.status);
        if r.status < 300 {
            served += 1;
            assert!(
                path.starts_with(&format!("/s/{good}/math/b1/")),
                "served an unsigned path {path}"
            );
        }
    }
    assert!(served > 0, "the unmutated requests were served");
    let _ = std::fs::remove_dir_all(&dir);
}
