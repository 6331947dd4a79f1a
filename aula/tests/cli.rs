//! The `aula` binary's configuration and `token` subcommand, run as a user would.

mod common;

use common::{aula, tempdir};
use signaling::TokenKeys;

#[test]
fn token_uses_the_secret_from_the_environment_and_carries_grants() {
    let dir = tempdir("env");
    let out = aula()
        .current_dir(&dir)
        .env("AULA_AUTH__API_KEY", "k1")
        .env("AULA_AUTH__API_SECRET", "an-env-secret-of-enough-length!!")
        .args([
            "token",
            "--room",
            "math",
            "--identity",
            "ana",
            "--publish",
            "--ttl",
            "90m",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("utf8");
    let claims = TokenKeys::new("k1", "an-env-secret-of-enough-length!!")
        .verify_for_room(token.trim(), "math")
        .expect("verifies");
    assert_eq!(claims.sub, "ana");
    assert!(claims.grants.publish && claims.grants.subscribe && !claims.grants.admin);
    assert_eq!(claims.exp - claims.iat, 90 * 60);
}

#[test]
fn toml_file_is_read_and_environment_overrides_it() {
    let dir = tempdir("toml");
    std::fs::write(
        dir.join("aula.toml"),
        "[auth]\napi_key = \"filekey\"\napi_secret = \"a-file-secret-of-enough-length!!\"\n",
    )
    .expect("write");
    let out = aula()
        .current_dir(&dir)
        .args(["token", "--room", "r", "--identity", "i"])
        .output()
        .expect("run");
    let token = String::from_utf8(out.stdout).expect("utf8");
    let keys = TokenKeys::new("filekey", "a-file-secret-of-enough-length!!");
    assert!(keys.verify(token.trim()).is_ok());
    let out = aula()
        .current_dir(&dir)
        .env("AULA_AUTH__API_KEY", "envkey")
        .args(["token", "--room", "r", "--identity", "i"])
        .output()
        .expect("run");
    let token = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(
        keys.verify(token.trim()).err(),
        Some(signaling::TokenError::UnknownKey)
    );
}

#[test]
fn development_secret_is_created_once_and_reused() {
    let dir = tempdir("dev");
    let run = || {
        aula()
            .current_dir(&dir)
            .args(["token", "--room", "r", "--identity", "i"])
            .output()
            .expect("run")
    };
    assert!(run().status.success());
    let secret = std::fs::read_to_string(dir.join("aula-data/dev-secret")).expect("dev secret");
    assert!(secret.len() >= 32);
    let token = String::from_utf8(run().stdout).expect("utf8");
    assert!(TokenKeys::new("devkey", &secret)
        .verify(token.trim())
        .is_ok());
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempdir("bad");
    std::fs::write(dir.join("aula.toml"), "[http]\nbind = \"not an address\"\n").expect("write");
    let out = aula()
        .current_dir(&dir)
        .args(["token", "--room", "r", "--identity", "i"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid configuration"), "{err}");
    let out = aula()
        .current_dir(&dir)
        .args([
            "--config",
            "/nonexistent/aula.toml",
            "token",
            "--room",
            "r",
            "--identity",
            "i",
        ])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let out = aula()
        .args(["token", "--room", "r", "--identity", "i", "--ttl", "5y"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad duration"));
}

#[test]
fn bad_storage_and_signing_settings_are_refused_with_the_key_named() {
    let dir = tempdir("bad-hls-config");
    let cases: [(&str, &str, &str); 4] = [
        ("AULA_SIGNING__KEYS__k1", "short", "signing.keys.k1"),
        ("AULA_HLS__PART_S", "3.0", "hls.part_s"),
        ("AULA_STORAGE__BACKEND", "s3", "storage.s3.access_key_id"),
        ("AULA_HLS__NOPE", "1", "nope"),
    ];
    for (var, value, named) in cases {
        let out = aula()
            .current_dir(&dir)
            .env("AULA_STORAGE__DIR", dir.join("data"))
            .env("AULA_HTTP__BIND", "127.0.0.1:0")
            .env("AULA_MEDIA__BIND", "127.0.0.1:0")
            .env(var, value)
            .args(["egress", "run", "--room", "r", "--seconds", "1"])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} accepted");
        assert!(err.contains(named), "{var}={value}: {err}");
    }
    // Rotation: two keys need `active` to say which one signs.
    let out = aula()
        .current_dir(&dir)
        .env("AULA_STORAGE__DIR", dir.join("data"))
        .env("AULA_SIGNING__KEYS__k1", "a".repeat(32))
        .env("AULA_SIGNING__KEYS__k2", "b".repeat(32))
        .args(["egress", "run", "--room", "r", "--seconds", "1"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("signing.active"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped production configuration (deploy/aula.toml with the variables of
/// deploy/secrets.env.example) is valid, and `aula config` shows it with secrets hidden.
#[test]
fn the_deploy_config_checks_and_aula_config_hides_secrets() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let env = std::fs::read_to_string(deploy.join("secrets.env.example")).expect("example");
    let mut cmd = aula();
    cmd.current_dir(tempdir("deploy"));
    for line in env
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let (k, v) = line.split_once('=').expect("k=v");
        cmd.env(k, v);
    }
    let out = cmd
        .arg("--config")
        .arg(deploy.join("aula.toml"))
        .arg("config")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "bind = \"0.0.0.0:443\"",
        "tls_cert = \"/etc/aula/fullchain.pem\"",
        "api_secret = \"<set>\"",
        "k1 = \"<set>\"",
        "backend = \"s3\"",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    assert!(!text.contains("change-me"), "no secret is printed:\n{text}");
    // A bad value is refused with the field named.
    let bad = aula()
        .current_dir(tempdir("deploy-bad"))
        .env("AULA_COLLAB__IDLE_TIMEOUT_S", "1")
        .arg("config")
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("idle_timeout_s"));
}

/// The systemd unit is valid as systemd reads it (with this build's binary in its place).
#[test]
fn the_systemd_unit_verifies() {
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-analyze is missing: scripts/install-deps.sh installs systemd");
    }
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let unit = std::fs::read_to_string(deploy.join("aula.service")).expect("unit");
    let dir = tempdir("unit");
    let path = dir.join("aula.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/aula", env!("CARGO_BIN_EXE_aula")),
    )
    .expect("write");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGTERM (systemd, a container runtime) stops `aula serve` as cleanly as Ctrl-C does.
#[test]
fn serve_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempdir("sigterm");
    let mut child = aula()
        .current_dir(&dir)
        .env("AULA_HTTP__BIND", "127.0.0.1:0")
        .env("AULA_MEDIA__BIND", "127.0.0.1:0")
        .env("AULA_STORAGE__DIR", &dir)
        .arg("serve")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("aula listening"));
    assert!(listening, "aula started");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = child.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {log}", out.status);
    assert!(log.contains("shutting down"), "{log}");
}

/// A server that cannot open its storage says why and exits, without first printing the
/// "aula listening" line scripts and tests wait for.
#[test]
fn serve_announces_itself_only_once_its_storage_is_open() {
    let dir = tempdir("nostorage");
    let out = aula()
        .current_dir(&dir)
        .env("AULA_HTTP__BIND", "127.0.0.1:0")
        .env("AULA_MEDIA__BIND", "127.0.0.1:0")
        .env("AULA_STORAGE__DIR", &dir)
        .env("AULA_STORAGE__BACKEND", "s3")
        // Nothing listens on port 1.
        .env("AULA_STORAGE__S3__ENDPOINT", "http://127.0.0.1:1")
        .env("AULA_STORAGE__S3__ACCESS_KEY_ID", "a")
        .env("AULA_STORAGE__S3__SECRET_ACCESS_KEY", "b")
        .env("AULA_STORAGE__S3__CREATE_BUCKET", "true")
        .arg("serve")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("aula listening"), "{stdout}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("bucket"), "{log}");
}
