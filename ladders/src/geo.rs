//! Which shipped ladder profile suits a viewer's country (ISO 3166-1 alpha-2, as CDNs send it
//! in `CF-IPCountry` and similar headers). Deployments override this in configuration.

/// Country code -> profile; countries not listed get `global`.
pub const DEFAULT_GEO: &[(&str, &[&str])] = &[
    (
        "latam-mobile",
        &[
            "AR", "BO", "BR", "CL", "CO", "CR", "DO", "EC", "GT", "HN", "MX", "NI", "PA", "PE",
            "PY", "SV", "UY", "VE",
        ],
    ),
    (
        "south-asia-3g",
        &["AF", "BD", "BT", "IN", "LK", "MV", "NP", "PK"],
    ),
    (
        "africa-3g",
        &[
            "AO", "BF", "CD", "CI", "CM", "ET", "GH", "KE", "ML", "MW", "MZ", "NE", "NG", "RW",
            "SN", "TZ", "UG", "ZA", "ZM", "ZW",
        ],
    ),
    (
        "na-eu-broadband",
        &[
            "AT", "BE", "CA", "CH", "CZ", "DE", "DK", "ES", "FI", "FR", "GB", "IE", "IS", "IT",
            "LU", "NL", "NO", "PL", "PT", "SE", "US",
        ],
    ),
];

/// The default profile for a country code (case-insensitive); `None` for an unknown code.
pub fn default_profile_for(country: &str) -> Option<&'static str> {
    let c = country.trim().to_ascii_uppercase();
    if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Some(
        DEFAULT_GEO
            .iter()
            .find(|(_, cs)| cs.contains(&c.as_str()))
            .map_or("global", |(p, _)| p),
    )
}

/// The rungs of `ladder` (indexes) worth offering to viewers whose own profile is `viewer`: those
/// whose bitrate is at most 1.25x the viewer profile's top rung, and at least the lowest rung.
/// A 3G viewer of a broadband broadcast is not offered rungs its network cannot sustain.
pub fn variant_set(ladder: &crate::Ladder, viewer: &crate::Ladder) -> Vec<usize> {
    let cap = viewer
        .rungs
        .iter()
        .map(|r| r.bitrate_kbps)
        .max()
        .unwrap_or(0) as f64
        * 1.25;
    let mut v: Vec<usize> = ladder
        .rungs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.bitrate_kbps as f64 <= cap)
        .map(|(i, _)| i)
        .collect();
    if v.is_empty() && !ladder.rungs.is_empty() {
        v.push(0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_map_to_shipped_profiles() {
        assert_eq!(default_profile_for("ng"), Some("africa-3g"));
        assert_eq!(default_profile_for("BR"), Some("latam-mobile"));
        assert_eq!(default_profile_for("IN"), Some("south-asia-3g"));
        assert_eq!(default_profile_for("DE"), Some("na-eu-broadband"));
        assert_eq!(default_profile_for("JP"), Some("global"));
        for bad in ["", "X", "XYZ", "1A", "é"] {
            assert_eq!(default_profile_for(bad), None, "{bad}");
        }
        for (p, _) in DEFAULT_GEO {
            assert!(crate::shipped(p).is_some(), "{p}");
        }
    }

    #[test]
    fn a_3g_viewer_of_a_broadband_ladder_gets_the_low_rungs() {
        let global = crate::shipped("global").expect("global");
        let africa = crate::shipped("africa-3g").expect("africa");
        let set = variant_set(&global, &africa);
        assert!(!set.is_empty() && set.len() < global.rungs.len());
        assert!(set.iter().all(|&i| global.rungs[i].bitrate_kbps <= 700));
        assert_eq!(variant_set(&global, &global).len(), global.rungs.len());
    }
}
