//! Ladders by profile name, for requests that name one.

use ladders::Ladder;

use crate::error::EgressError;

/// A ladder by profile name: the shipped profiles, and `test` (a small 3-rung ladder).
pub fn ladder(profile: &str) -> Result<Ladder, EgressError> {
    if profile == "test" {
        return Ok(transcoder::testsrc::test_ladder());
    }
    ladders::shipped(profile).ok_or_else(|| {
        let names: Vec<&str> = ladders::shipped_names().chain(["test"]).collect();
        EgressError::UnknownProfile(profile.to_string(), names.join(", "))
    })
}
