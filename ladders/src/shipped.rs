//! Profiles and throughput distributions compiled into the binary.

use crate::profile::Ladder;
use crate::throughput::Throughput;

/// (name, profile TOML, throughput CSV)
pub const SHIPPED: &[(&str, &str, &str)] = &[
    (
        "global",
        include_str!("../profiles/global.toml"),
        include_str!("../throughput/global.csv"),
    ),
    (
        "latam-mobile",
        include_str!("../profiles/latam-mobile.toml"),
        include_str!("../throughput/latam-mobile.csv"),
    ),
    (
        "south-asia-3g",
        include_str!("../profiles/south-asia-3g.toml"),
        include_str!("../throughput/south-asia-3g.csv"),
    ),
    (
        "africa-3g",
        include_str!("../profiles/africa-3g.toml"),
        include_str!("../throughput/africa-3g.csv"),
    ),
    (
        "na-eu-broadband",
        include_str!("../profiles/na-eu-broadband.toml"),
        include_str!("../throughput/na-eu-broadband.csv"),
    ),
];

pub fn shipped_names() -> impl Iterator<Item = &'static str> {
    SHIPPED.iter().map(|s| s.0)
}

/// A shipped profile by name. Shipped profiles are validated by this crate's tests.
pub fn shipped(name: &str) -> Option<Ladder> {
    let (n, toml, _) = SHIPPED.iter().find(|s| s.0 == name)?;
    Ladder::from_toml(toml, n).ok()
}

/// The shipped throughput distribution for a geography.
pub fn shipped_throughput(name: &str) -> Option<Throughput> {
    let (n, _, csv) = SHIPPED.iter().find(|s| s.0 == name)?;
    Throughput::from_csv(csv, n).ok()
}
