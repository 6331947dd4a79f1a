//! Benchmarks and load generators (SFU fan-out, collab, ladder). None yet: see README "Status".
