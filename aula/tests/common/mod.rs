//! Helpers shared by the `aula` binary's tests.
#![allow(dead_code)]

use std::process::Command;

/// The built `aula` binary, without a config from the environment.
pub fn aula() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aula"));
    c.env_remove("AULA_CONFIG");
    c
}

/// A fresh directory for one test.
pub fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("aula-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tempdir");
    d
}
