//! Names that are never reused: a broadcast id per broadcast, an epoch per run of its job.

use rand::Rng;

fn suffix() -> String {
    let n: u32 = rand::rng().random();
    format!("{:06x}", n & 0xff_ffff)
}

/// `b-20261123t042758-3f9c1a`: sortable by start time, unique by the random tail.
pub fn new_broadcast_id() -> String {
    format!(
        "b-{}-{}",
        chrono::Utc::now().format("%Y%m%dt%H%M%S"),
        suffix()
    )
}

/// A job run's epoch: part of every media object name, so a restarted run writes new names.
pub fn new_epoch() -> String {
    format!("e{}{}", chrono::Utc::now().format("%H%M%S"), suffix())
}

/// Room and broadcast names become object keys and URL path segments.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_valid() {
        let a = new_broadcast_id();
        let b = new_broadcast_id();
        assert_ne!(a, b);
        assert!(valid_name(&a) && valid_name(&new_epoch()));
        for bad in ["", "..", "a/b", "a b", "é", &"x".repeat(200)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
