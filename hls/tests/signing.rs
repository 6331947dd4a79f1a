//! Signed URLs: tampered, expired, wrong-prefix and unknown-key tokens are refused; rotation keeps
//! old tokens valid while their key is still configured.

use hls::{split_signed_path, SignError, SigningKeys};

fn keys(active: &str) -> SigningKeys {
    SigningKeys::new(
        active,
        [
            ("k1".to_string(), b"first secret".to_vec()),
            ("k2".to_string(), b"second secret".to_vec()),
        ],
    )
    .expect("keys")
}

#[test]
fn a_token_grants_its_prefix_until_it_expires() {
    let k = keys("k1");
    let t = k.sign_until("/math/b1/", 2_000_000_000);
    let path = format!("/s/{t}/math/b1/v0/e1-3.m4s");
    let (token, bare) = split_signed_path(&path).expect("split");
    assert_eq!(bare, "/math/b1/v0/e1-3.m4s");
    assert_eq!(k.verify(token, bare, 1_999_999_999), Ok(()));
    assert_eq!(
        k.verify(token, bare, 2_000_000_000),
        Err(SignError::Expired)
    );
    assert!(matches!(
        k.verify(token, "/history/b1/x.m4s", 0),
        Err(SignError::WrongPrefix { .. })
    ));
    assert!(matches!(
        k.verify(token, "/math/b1/../../etc/passwd", 0),
        Err(SignError::WrongPrefix { .. })
    ));
}

#[test]
fn tampering_and_unknown_keys_are_refused() {
    let k = keys("k1");
    let t = k.sign_until("/math/b1/", 2_000_000_000);
    // Extend the expiry without re-signing.
    let forged = t.replacen("2000000000", "2100000000", 1);
    assert_eq!(
        k.verify(&forged, "/math/b1/a", 0),
        Err(SignError::BadSignature)
    );
    // Widen the scope without re-signing.
    let parts: Vec<&str> = t.split('.').collect();
    let wide = format!("{}.{}.{}.{}", parts[0], parts[1], "Lw", parts[3]);
    assert_eq!(
        k.verify(&wide, "/anything", 0),
        Err(SignError::BadSignature)
    );
    let other = SigningKeys::new("k9", [("k9".to_string(), b"x".to_vec())]).expect("keys");
    assert_eq!(
        other.verify(&t, "/math/b1/a", 0),
        Err(SignError::UnknownKey("k1".into()))
    );
    for junk in ["", "a.b", "k1.x.y.z", "k1.1.%%%.zz", "k1.1.Lw.Lw.extra"] {
        assert!(k.verify(junk, "/math/b1/a", 0).is_err(), "{junk}");
    }
    assert_eq!(split_signed_path("/math/b1/a"), Err(SignError::Missing));
    assert_eq!(split_signed_path("/s//math"), Err(SignError::Missing));
}

#[test]
fn rotation_keeps_old_tokens_valid() {
    let old = keys("k1").sign_until("/math/", 2_000_000_000);
    let rotated = keys("k2");
    let new = rotated.sign_until("/math/", 2_000_000_000);
    assert!(new.starts_with("k2."));
    assert_eq!(rotated.verify(&old, "/math/b1/x", 0), Ok(()));
    // Once k1 is removed, its tokens stop working.
    let only_new =
        SigningKeys::new("k2", [("k2".to_string(), b"second secret".to_vec())]).expect("keys");
    assert_eq!(
        only_new.verify(&old, "/math/b1/x", 0),
        Err(SignError::UnknownKey("k1".into()))
    );
}

/// Issue 13, item 10: a prefix covers whole path segments, so `/math/b1` does not open `/math/b10`.
#[test]
fn a_prefix_covers_whole_path_segments_only() {
    let k = keys("k1");
    let t = k.sign_until("/math/b1", 2_000_000_000);
    assert_eq!(k.verify(&t, "/math/b1", 0), Ok(()));
    assert_eq!(k.verify(&t, "/math/b1/master.m3u8", 0), Ok(()));
    assert!(matches!(
        k.verify(&t, "/math/b10/master.m3u8", 0),
        Err(SignError::WrongPrefix { .. })
    ));
    let slash = k.sign_until("/math/b1/", 2_000_000_000);
    assert!(matches!(
        k.verify(&slash, "/math/b10/master.m3u8", 0),
        Err(SignError::WrongPrefix { .. })
    ));
}
