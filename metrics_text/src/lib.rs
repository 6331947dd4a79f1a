//! The one writer of `/metrics` text (Prometheus exposition format 0.0.4) that every crate's
//! metrics go through: a family's `# TYPE` line once, then all its samples together (the
//! format requires a family's lines to be one group), label values escaped.
//!
//! aula's metrics are atomics and job snapshots read at scrape time, so a registry of metric
//! objects (`prometheus-client`) would add a second copy of each value and a collector per
//! crate; this is the part of it aula needs (`docs/decisions.md`).
#![deny(unsafe_code)]

use std::fmt::{Display, Write as _};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// Appends metric families to a `/metrics` body.
pub struct Exposition<'a> {
    out: &'a mut String,
}

impl<'a> Exposition<'a> {
    pub fn new(out: &'a mut String) -> Exposition<'a> {
        Exposition { out }
    }

    /// A family with one unlabelled sample.
    pub fn counter(&mut self, name: &str, value: impl Display) {
        self.family(name, Kind::Counter, |f| f.value(value));
    }

    /// A family with one unlabelled sample.
    pub fn gauge(&mut self, name: &str, value: impl Display) {
        self.family(name, Kind::Gauge, |f| f.value(value));
    }

    /// A family: its type line, then the samples `samples` writes (none is fine).
    pub fn family(&mut self, name: &str, kind: Kind, samples: impl FnOnce(&mut Family<'_>)) {
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        samples(&mut Family {
            out: self.out,
            name,
        });
    }
}

/// The samples of one family.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl Family<'_> {
    pub fn value(&mut self, value: impl Display) {
        let _ = writeln!(self.out, "{} {value}", self.name);
    }

    /// A sample with labels, written in the order given.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(self.name);
        self.out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape(self.out, v);
            self.out.push('"');
        }
        let _ = writeln!(self.out, "}} {value}");
    }
}

/// A label value as the format quotes it: backslash, double quote and newline escaped.
fn escape(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_typed_once_and_grouped() {
        let mut out = String::new();
        let mut m = Exposition::new(&mut out);
        m.gauge("aula_rooms", 3);
        m.counter("aula_frames_total", 10u64);
        m.family("aula_jobs", Kind::Gauge, |f| {
            f.sample(&[("state", "live")], 1);
            f.sample(&[("state", "ended")], 2);
        });
        m.family("aula_speed", Kind::Gauge, |f| {
            f.sample(
                &[("job", "b-1"), ("rendition", "v0")],
                format_args!("{:.3}", 0.98765),
            );
        });
        m.family("aula_empty", Kind::Gauge, |_| {});
        assert_eq!(
            out,
            "# TYPE aula_rooms gauge\naula_rooms 3\n\
             # TYPE aula_frames_total counter\naula_frames_total 10\n\
             # TYPE aula_jobs gauge\naula_jobs{state=\"live\"} 1\naula_jobs{state=\"ended\"} 2\n\
             # TYPE aula_speed gauge\naula_speed{job=\"b-1\",rendition=\"v0\"} 0.988\n\
             # TYPE aula_empty gauge\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        Exposition::new(&mut out)
            .family("m", Kind::Gauge, |f| f.sample(&[("job", "a\"b\\c\nd")], 1));
        assert_eq!(out, "# TYPE m gauge\nm{job=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
