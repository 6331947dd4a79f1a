//! Active speaker detection from the RFC 6464 audio-level header extension.

use std::time::{Duration, Instant};

use crate::ids::ParticipantId;

/// Levels are in -dBov (0 loudest, -127 silence). A packet at or above this is voiced.
const VOICED_DBOV: i16 = -50;
/// Voiced packets in a row (20 ms each) before a participant counts as speaking: filters clicks.
const MIN_RUN: u32 = 2;
/// A speaker stays speaking this long after its last voiced run (speech has gaps).
const HOLD: Duration = Duration::from_millis(1000);
const REPORT_EVERY: Duration = Duration::from_millis(300);

#[derive(Debug)]
struct Level {
    participant: ParticipantId,
    run: u32,
    last_voiced: Option<Instant>,
    /// Loudest level since the last report, to order speakers.
    peak: i16,
}

/// Tracks each audio publisher's voice activity and reports the speaking set when it changes.
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    levels: Vec<Level>,
    current: Vec<ParticipantId>,
    next_report: Option<Instant>,
}

impl SpeakerDetector {
    pub fn observe(&mut self, participant: ParticipantId, level_dbov: i8, now: Instant) {
        let level = -(level_dbov.unsigned_abs() as i16);
        let l = match self
            .levels
            .iter()
            .position(|l| l.participant == participant)
        {
            Some(i) => &mut self.levels[i],
            None => {
                self.levels.push(Level {
                    participant,
                    run: 0,
                    last_voiced: None,
                    peak: -127,
                });
                let last = self.levels.len() - 1;
                &mut self.levels[last]
            }
        };
        if level >= VOICED_DBOV {
            l.run += 1;
            if l.run >= MIN_RUN {
                l.last_voiced = Some(now);
            }
        } else {
            l.run = 0;
        }
        l.peak = l.peak.max(level);
    }

    pub fn remove(&mut self, participant: ParticipantId) {
        self.levels.retain(|l| l.participant != participant);
    }

    /// Returns the new speaking set (loudest first) when it changed since the last report.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<ParticipantId>> {
        let due = *self.next_report.get_or_insert(now);
        if now < due {
            return None;
        }
        self.next_report = Some(now + REPORT_EVERY);
        let mut speaking: Vec<(i16, ParticipantId)> = self
            .levels
            .iter()
            .filter(|l| {
                l.last_voiced
                    .is_some_and(|t| now.saturating_duration_since(t) < HOLD)
            })
            .map(|l| (l.peak, l.participant))
            .collect();
        for l in &mut self.levels {
            l.peak = -127;
        }
        speaking.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let ids: Vec<ParticipantId> = speaking.into_iter().map(|(_, p)| p).collect();
        if ids == self.current {
            return None;
        }
        self.current = ids.clone();
        Some(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loud_participant_becomes_speaker_and_silence_ends_it() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        let (a, b) = (ParticipantId(1), ParticipantId(2));
        let mut t = t0;
        for _ in 0..50 {
            d.observe(a, -20, t);
            d.observe(b, -120, t);
            t += Duration::from_millis(20);
        }
        assert_eq!(d.poll(t), Some(vec![a]));
        assert_eq!(d.poll(t + Duration::from_millis(10)), None);
        for _ in 0..100 {
            d.observe(a, -127, t);
            d.observe(b, -10, t);
            t += Duration::from_millis(20);
        }
        assert_eq!(d.poll(t), Some(vec![b]));
        // b goes quiet: it stops being a speaker after the hold time.
        for _ in 0..60 {
            d.observe(b, -127, t);
            t += Duration::from_millis(20);
        }
        assert_eq!(d.poll(t), Some(vec![]));
        // A single click is not speech.
        d.observe(a, -5, t);
        d.observe(a, -127, t);
        assert_eq!(d.poll(t + Duration::from_millis(400)), None);
    }
}
