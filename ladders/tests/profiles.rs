//! Shipped profiles are valid; bad profiles are refused with messages that name the field.

use ladders::{shipped, shipped_names, shipped_throughput, Ladder, Network, ParseError, SHIPPED};

fn global_text() -> String {
    SHIPPED
        .iter()
        .find(|s| s.0 == "global")
        .map(|s| s.1.to_string())
        .unwrap_or_default()
}

/// Applies `edit` to the global profile's text and returns the validation messages.
fn violations(edit: impl Fn(&str) -> String) -> Vec<String> {
    match Ladder::from_toml(&edit(&global_text()), "test.toml") {
        Ok(_) => Vec::new(),
        Err(ParseError::Invalid(e)) => e
            .violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.message))
            .collect(),
        Err(e) => vec![e.to_string()],
    }
}

fn assert_names(msgs: &[String], field: &str) {
    assert!(
        msgs.iter().any(|m| m.starts_with(field)),
        "expected a violation of {field}, got {msgs:#?}"
    );
}

#[test]
fn every_shipped_profile_is_valid_and_has_a_throughput_distribution() {
    let names: Vec<_> = shipped_names().collect();
    for want in [
        "global",
        "latam-mobile",
        "south-asia-3g",
        "africa-3g",
        "na-eu-broadband",
    ] {
        assert!(names.contains(&want), "{want} missing");
    }
    for (name, toml, _) in SHIPPED {
        let l = Ladder::from_toml(toml, name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&l.name, name);
        assert!(l.audio_only);
        assert!(shipped(name).is_some());
        let t = shipped_throughput(name).unwrap_or_else(|| panic!("{name} throughput"));
        assert!(t.percentile(50.0) > 0.0);
        if l.network == Network::ThreeG {
            assert!(l.rungs[0].bitrate_kbps <= 300, "{name}");
        }
    }
}

#[test]
fn codecs_strings_follow_rfc6381() {
    let g = shipped("global").expect("global");
    assert_eq!(g.rungs[0].codecs(), "avc1.42c01e"); // constrained baseline 3.0
    assert_eq!(g.rungs[1].codecs(), "avc1.4d401e"); // main 3.0
    assert_eq!(
        g.rungs.last().map(|r| r.codecs()).as_deref(),
        Some("avc1.640028")
    ); // high 4.0
    assert_eq!(g.audio.codecs(), "mp4a.40.2");
}

#[test]
fn rungs_out_of_order_are_refused() {
    let msgs = violations(|t| t.replacen("bitrate_kbps = 365", "bitrate_kbps = 140", 1));
    assert_names(&msgs, "rung[1].bitrate_kbps");
    assert!(
        msgs.iter().any(|m| m.contains("lowest to highest")),
        "{msgs:?}"
    );
}

#[test]
fn insane_bits_per_pixel_is_refused() {
    // 1080p30 at 200 kbit/s is mush.
    let msgs = violations(|t| t.replacen("bitrate_kbps = 6000", "bitrate_kbps = 200", 1));
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("rung[7].bitrate_kbps") && m.contains("bits per pixel")),
        "{msgs:?}"
    );
}

#[test]
fn level_too_low_for_resolution_and_rate_is_refused() {
    let msgs = violations(|t| t.replacen("level = \"4.0\"", "level = \"3.1\"", 1));
    assert_names(&msgs, "rung[7].level");
    assert!(msgs.iter().any(|m| m.contains("macroblocks")), "{msgs:?}");
    let msgs = violations(|t| t.replacen("level = \"4.0\"", "level = \"9.9\"", 1));
    assert!(
        msgs.iter().any(|m| m.contains("unknown H.264 level")),
        "{msgs:?}"
    );
}

#[test]
fn mismatched_keyframe_intervals_and_odd_sizes_are_refused() {
    let msgs = violations(|t| {
        let i = t.rfind("keyframe_interval_s = 2.0").unwrap_or(0);
        format!(
            "{}keyframe_interval_s = 4.0{}",
            &t[..i],
            &t[i + "keyframe_interval_s = 2.0".len()..]
        )
    });
    assert_names(&msgs, "rung[7].keyframe_interval_s");
    let msgs = violations(|t| t.replacen("width = 416", "width = 417", 1));
    assert_names(&msgs, "rung[0].width");
}

#[test]
fn three_g_profile_needs_a_low_rung_and_audio_only() {
    let text = SHIPPED
        .iter()
        .find(|s| s.0 == "africa-3g")
        .map(|s| s.1)
        .unwrap_or_default();
    let bad = text
        .replacen("bitrate_kbps = 80", "bitrate_kbps = 310", 1)
        .replacen("bitrate_kbps = 160", "bitrate_kbps = 320", 1);
    let bad = bad
        .replacen("bitrate_kbps = 300", "bitrate_kbps = 330", 1)
        .replace("audio_only = true", "audio_only = false");
    let Err(ParseError::Invalid(e)) = Ladder::from_toml(&bad, "x") else {
        panic!("accepted")
    };
    let text = e.to_string();
    assert!(
        text.contains("rung[0].bitrate_kbps: a 3g profile needs a rung at or under 300"),
        "{text}"
    );
    assert!(
        text.contains("audio_only: a 3g profile must offer the audio-only variant"),
        "{text}"
    );
}

#[test]
fn audio_and_syntax_errors_name_the_field() {
    let msgs = violations(|t| t.replacen("sample_rate = 48000", "sample_rate = 22050", 1));
    assert_names(&msgs, "audio.sample_rate");
    let msgs = violations(|t| t.replacen("codec = \"aac-lc\"", "codec = \"opus\"", 1));
    assert_names(&msgs, "audio.codec");
    // Unknown keys and wrong types come from the TOML layer, with the key named.
    let msgs = violations(|t| t.replacen("fps = 30", "fps = \"fast\"", 1));
    assert!(msgs.iter().any(|m| m.contains("fps")), "{msgs:?}");
    let msgs = violations(|t| t.replacen("fps = 30", "fps = 30\nframes = 2", 1));
    assert!(msgs.iter().any(|m| m.contains("frames")), "{msgs:?}");
    let msgs = violations(|t| t.replacen("name = \"234p\"", "name = \"360p\"", 1));
    assert!(
        msgs.iter().any(|m| m.contains("used by two rungs")),
        "{msgs:?}"
    );
}

#[test]
fn a_profile_round_trips_through_toml() {
    for name in shipped_names() {
        let l = shipped(name).expect("shipped");
        let again = Ladder::from_toml(&l.to_toml(), "round trip").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l, again);
    }
}
