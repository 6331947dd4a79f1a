//! Webhooks: `POST` a JSON event to each configured URL when a job starts, ends or fails.
//! Signed with HMAC-SHA256 of the body when a secret is set (`X-Aula-Signature: sha256=<hex>`),
//! retried three times with backoff, never blocking the job.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tracing::{debug, warn};

use crate::status::JobStatus;

#[derive(Clone, Default)]
pub struct Webhooks {
    urls: Vec<String>,
    secret: Option<Vec<u8>>,
}

#[derive(Serialize)]
struct Payload<'a> {
    /// `egress_started`, `egress_ended`, `egress_failed`.
    event: &'a str,
    at: String,
    job: &'a JobStatus,
}

impl Webhooks {
    pub fn new(urls: Vec<String>, secret: Option<String>) -> Webhooks {
        Webhooks {
            urls,
            secret: secret.filter(|s| !s.is_empty()).map(String::into_bytes),
        }
    }

    pub fn signature(secret: &[u8], body: &[u8]) -> String {
        let mut m = <Hmac<Sha256>>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        m.update(body);
        let hex: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256={hex}")
    }

    pub(crate) fn send(&self, event: &'static str, job: &JobStatus) {
        if self.urls.is_empty() {
            return;
        }
        let payload = Payload {
            event,
            at: crate::status::now(),
            job,
        };
        if let Ok(body) = serde_json::to_vec(&payload) {
            self.post(event, body);
        }
    }

    /// Any other event (the rooms' lifecycle): `{"event","at", ...fields}`, signed and
    /// retried the same way.
    pub fn send_event(&self, event: &'static str, fields: &impl Serialize) {
        if self.urls.is_empty() {
            return;
        }
        let mut v = serde_json::to_value(fields).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("event".into(), event.into());
            o.insert(
                "at".into(),
                chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .into(),
            );
        }
        if let Ok(body) = serde_json::to_vec(&v) {
            self.post(event, body);
        }
    }

    fn post(&self, event: &'static str, body: Vec<u8>) {
        let sig = self.secret.as_ref().map(|s| Self::signature(s, &body));
        for url in self.urls.clone() {
            let (body, sig) = (body.clone(), sig.clone());
            tokio::task::spawn_blocking(move || deliver(&url, event, &body, sig.as_deref()));
        }
    }
}

fn deliver(url: &str, event: &str, body: &[u8], sig: Option<&str>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=3 {
        let mut req = agent
            .post(url)
            .header("content-type", "application/json")
            .header("x-aula-event", event);
        if let Some(s) = sig {
            req = req.header("x-aula-signature", s);
        }
        match req.send(body) {
            Ok(r) if r.status().is_success() => {
                debug!(%url, event, "webhook delivered");
                return;
            }
            Ok(r) => warn!(%url, event, attempt, status = r.status().as_u16(), "webhook refused"),
            Err(e) => warn!(%url, event, attempt, error = %e, "webhook failed"),
        }
        std::thread::sleep(wait);
        wait *= 2;
    }
}
