//! Wall time per op kind, for `quambac bench --profile`: where a decode step goes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Accumulated wall time and call count per label (an op name, or fused names joined by `+`).
#[derive(Clone, Debug, Default)]
pub struct OpProfile {
    entries: BTreeMap<&'static str, (Duration, usize)>,
}

impl OpProfile {
    /// An empty profile.
    pub fn new() -> OpProfile {
        OpProfile::default()
    }

    /// Adds the time since `start` to `label`.
    pub fn add(&mut self, label: &'static str, start: Instant) {
        let e = self.entries.entry(label).or_default();
        e.0 += start.elapsed();
        e.1 += 1;
    }

    /// `(label, total time, calls)`, longest first.
    pub fn rows(&self) -> Vec<(&'static str, Duration, usize)> {
        let mut rows: Vec<_> = self.entries.iter().map(|(k, (d, n))| (*k, *d, *n)).collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        rows
    }

    /// Total time over every label.
    pub fn total(&self) -> Duration {
        self.entries.values().map(|(d, _)| *d).sum()
    }
}
