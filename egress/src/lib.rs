//! Egress jobs: room tracks to a signed HLS ladder. Filled by issue 5; empty until then.
