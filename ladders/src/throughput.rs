//! Throughput distributions: kbit/s samples or percentiles, as a weighted set of points.

#[derive(Clone, Debug, PartialEq)]
pub struct Throughput {
    /// (kbit/s, probability), sorted by kbit/s; probabilities sum to 1.
    points: Vec<(f64, f64)>,
}

#[derive(Debug, thiserror::Error)]
#[error("throughput {origin} line {line}: {message}")]
pub struct ThroughputError {
    pub origin: String,
    pub line: usize,
    pub message: String,
}

/// Percentile tables are spread over this many equally likely points.
const QUANTILES: usize = 200;

impl Throughput {
    pub fn from_samples(samples: &[f64]) -> Option<Throughput> {
        let mut s: Vec<f64> = samples
            .iter()
            .copied()
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let w = 1.0 / s.len() as f64;
        Some(Throughput {
            points: s.into_iter().map(|v| (v, w)).collect(),
        })
    }

    /// From (percentile 0..=100, kbit/s) pairs: the CDF is linear between them and flat
    /// outside (the lowest and highest given values stand for the tails).
    pub fn from_percentiles(table: &[(f64, f64)]) -> Option<Throughput> {
        let mut t: Vec<(f64, f64)> = table.to_vec();
        t.sort_by(|a, b| a.0.total_cmp(&b.0));
        if t.is_empty() || t.windows(2).any(|w| w[1].1 < w[0].1) {
            return None;
        }
        let at = |p: f64| -> f64 {
            if p <= t[0].0 {
                return t[0].1;
            }
            for w in t.windows(2) {
                if p <= w[1].0 {
                    let f = (p - w[0].0) / (w[1].0 - w[0].0).max(f64::EPSILON);
                    return w[0].1 + f * (w[1].1 - w[0].1);
                }
            }
            t[t.len() - 1].1
        };
        let samples: Vec<f64> = (0..QUANTILES)
            .map(|i| at((i as f64 + 0.5) * 100.0 / QUANTILES as f64))
            .collect();
        Throughput::from_samples(&samples)
    }

    /// Parses a CSV: `#` comments, then a header `kbps` (samples) or `percentile,kbps`;
    /// without a header, one number per line is a sample.
    pub fn from_csv(text: &str, origin: &str) -> Result<Throughput, ThroughputError> {
        let err = |line: usize, message: String| ThroughputError {
            origin: origin.to_string(),
            line,
            message,
        };
        let mut percentiles: Option<bool> = None;
        let mut samples = Vec::new();
        let mut table = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            if percentiles.is_none() && cols.iter().any(|c| c.parse::<f64>().is_err()) {
                percentiles = match cols.as_slice() {
                    ["kbps"] => Some(false),
                    ["percentile", "kbps"] => Some(true),
                    _ => {
                        return Err(err(
                            n,
                            format!("unknown header {line:?}: use \"kbps\" or \"percentile,kbps\""),
                        ))
                    }
                };
                continue;
            }
            let nums: Result<Vec<f64>, _> = cols.iter().map(|c| c.parse::<f64>()).collect();
            let nums = nums.map_err(|_| err(n, format!("not a number: {line:?}")))?;
            if nums.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(err(n, format!("values must be finite and >= 0: {line:?}")));
            }
            match (percentiles.unwrap_or(false), nums.as_slice()) {
                (false, [kbps]) => samples.push(*kbps),
                (true, [p, kbps]) if *p <= 100.0 => table.push((*p, *kbps)),
                (true, [_, _]) => return Err(err(n, "a percentile is within 0..=100".into())),
                _ => {
                    return Err(err(
                        n,
                        format!(
                            "expected {} column(s): {line:?}",
                            if percentiles == Some(true) { 2 } else { 1 }
                        ),
                    ))
                }
            }
        }
        let out = if percentiles == Some(true) {
            Throughput::from_percentiles(&table).ok_or_else(|| {
                err(
                    0,
                    "percentiles must be given with kbit/s not decreasing".into(),
                )
            })?
        } else {
            Throughput::from_samples(&samples)
                .ok_or_else(|| err(0, "no positive kbit/s samples".into()))?
        };
        Ok(out)
    }

    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// The kbit/s at percentile p (0..=100).
    pub fn percentile(&self, p: f64) -> f64 {
        let mut acc = 0.0;
        for &(v, w) in &self.points {
            acc += w;
            if acc * 100.0 >= p - 1e-9 {
                return v;
            }
        }
        self.points.last().map_or(0.0, |p| p.0)
    }
}
