//! Ladder profiles per geography and the ladder tuner. Filled by issue 3; empty until then.
