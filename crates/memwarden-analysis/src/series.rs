//! A bounded time series of memory readings.

use std::collections::VecDeque;

use serde::Serialize;

/// One reading: when (the snapshot's `taken_at_ms`) and how much, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    pub mib: f64,
}

/// A ring of the most recent samples: pushing past the capacity drops the oldest, so a view left
/// open all day holds a fixed amount of memory.
#[derive(Debug, Clone)]
pub struct Series {
    samples: VecDeque<Sample>,
    capacity: usize,
    /// The highest value ever pushed, including samples the ring has since dropped.
    peak: Option<f64>,
}

impl Series {
    /// A series that keeps at most `capacity` samples (at least 1).
    pub fn with_capacity(capacity: usize) -> Series {
        let capacity = capacity.max(1);
        // Grows as samples come: a view with hundreds of short-lived processes should not
        // reserve an hour of samples for each.
        Series {
            samples: VecDeque::new(),
            capacity,
            peak: None,
        }
    }

    /// Appends a sample. Non-finite values and samples older than the last one are ignored: a
    /// series only moves forward in time, and a NaN would poison every figure derived from it.
    /// Returns whether the sample was kept.
    pub fn push(&mut self, sample: Sample) -> bool {
        if !sample.mib.is_finite() {
            return false;
        }
        if let Some(last) = self.samples.back()
            && sample.t_ms < last.t_ms
        {
            return false;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        self.peak = Some(self.peak.map_or(sample.mib, |p| p.max(sample.mib)));
        true
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The samples, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Sample> + ExactSizeIterator {
        self.samples.iter()
    }

    /// The values in MiB, oldest first (what [`crate::pelt`] takes).
    pub fn values(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.mib).collect()
    }

    /// The times in ms, oldest first.
    pub fn times(&self) -> Vec<u64> {
        self.samples.iter().map(|s| s.t_ms).collect()
    }

    pub fn last(&self) -> Option<Sample> {
        self.samples.back().copied()
    }

    /// The highest value seen since the series began (not only in the ring).
    pub fn peak(&self) -> Option<f64> {
        self.peak
    }
}
