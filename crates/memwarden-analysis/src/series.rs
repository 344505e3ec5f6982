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
///
/// A sample is kept in 8 bytes, not 16: its time as milliseconds after `base_ms` and its value as
/// an `f32` (a relative error under 6e-8: 5 KiB in 80 GiB, below anything a chart or PELT can
/// tell). `top` keeps a series for every workload, hundreds of them, and the ring is most of
/// its heap. The last sample and the peak stay exact.
#[derive(Debug, Clone)]
pub struct Series {
    samples: VecDeque<(u32, f32)>,
    base_ms: u64,
    capacity: usize,
    last: Option<Sample>,
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
            base_ms: 0,
            capacity,
            last: None,
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
        if let Some(last) = self.last
            && sample.t_ms < last.t_ms
        {
            return false;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        if self.samples.len() == self.samples.capacity() {
            // Doubling, but never past the ring's own capacity: 600 samples would otherwise
            // take room for 1,024, in every one of hundreds of series.
            let room = self
                .samples
                .len()
                .max(4)
                .min(self.capacity - self.samples.len());
            self.samples.reserve_exact(room);
        }
        if self.samples.is_empty() {
            self.base_ms = sample.t_ms;
        }
        let offset = self.offset_of(sample.t_ms);
        let mib = sample.mib.clamp(f32::MIN as f64, f32::MAX as f64) as f32;
        self.samples.push_back((offset, mib));
        self.last = Some(sample);
        self.peak = Some(self.peak.map_or(sample.mib, |p| p.max(sample.mib)));
        true
    }

    /// `t_ms` as an offset from the base, moving the base forward (to the oldest sample kept,
    /// dropping samples more than ~49 days older than `t_ms`) when it does not fit in 32 bits.
    fn offset_of(&mut self, t_ms: u64) -> u32 {
        if let Ok(o) = u32::try_from(t_ms - self.base_ms) {
            return o;
        }
        while let Some(&(o, _)) = self.samples.front() {
            if t_ms - (self.base_ms + u64::from(o)) <= u64::from(u32::MAX) {
                break;
            }
            self.samples.pop_front();
        }
        let new_base = self
            .samples
            .front()
            .map_or(t_ms, |&(o, _)| self.base_ms + u64::from(o));
        let shift = new_base - self.base_ms;
        for (o, _) in &mut self.samples {
            // Every kept offset is at least the front's: the shift cannot underflow.
            *o -= shift as u32;
        }
        self.base_ms = new_base;
        (t_ms - new_base) as u32
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
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Sample> + ExactSizeIterator + '_ {
        self.samples.iter().map(|&(o, mib)| Sample {
            t_ms: self.base_ms + u64::from(o),
            mib: f64::from(mib),
        })
    }

    /// The values in MiB, oldest first (what [`crate::pelt`] takes).
    pub fn values(&self) -> Vec<f64> {
        self.iter().map(|s| s.mib).collect()
    }

    /// The times in ms, oldest first.
    pub fn times(&self) -> Vec<u64> {
        self.iter().map(|s| s.t_ms).collect()
    }

    /// The last sample pushed, exactly as it came.
    pub fn last(&self) -> Option<Sample> {
        self.last
    }

    /// The highest value seen since the series began (not only in the ring).
    pub fn peak(&self) -> Option<f64> {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_ms: u64, mib: f64) -> Sample {
        Sample { t_ms, mib }
    }

    #[test]
    fn keeps_times_exactly_and_values_within_f32() {
        let mut series = Series::with_capacity(3);
        for (t, v) in [
            (1_000, 10.0),
            (2_000, 81_920.123_456),
            (2_500, 0.5),
            (9_000, 7.0),
        ] {
            assert!(series.push(s(t, v)));
        }
        let got: Vec<Sample> = series.iter().collect();
        assert_eq!(
            got.iter().map(|x| x.t_ms).collect::<Vec<_>>(),
            [2_000, 2_500, 9_000]
        );
        assert!((got[0].mib - 81_920.123_456).abs() < 81_920.0 * 6e-8);
        assert_eq!(series.last(), Some(s(9_000, 7.0)));
        assert_eq!(series.peak(), Some(81_920.123_456));
        assert!(!series.push(s(8_999, 1.0)), "older than the last");
        assert!(!series.push(s(10_000, f64::NAN)));
    }

    #[test]
    fn a_gap_past_32_bits_of_milliseconds_moves_the_base() {
        let day = 86_400_000u64;
        let mut series = Series::with_capacity(10);
        series.push(s(5, 1.0));
        series.push(s(30 * day, 2.0));
        // 60 days after the first: the first no longer fits and is dropped, the second stays.
        series.push(s(60 * day, 3.0));
        let times: Vec<u64> = series.iter().map(|x| x.t_ms).collect();
        assert_eq!(times, [30 * day, 60 * day]);
        // A gap wider than the whole window keeps only the new sample.
        series.push(s(200 * day, 4.0));
        assert_eq!(
            series.iter().map(|x| x.t_ms).collect::<Vec<_>>(),
            [200 * day]
        );
        assert_eq!(series.iter().map(|x| x.mib).collect::<Vec<_>>(), [4.0]);
    }

    #[test]
    fn the_ring_takes_no_more_room_than_its_capacity() {
        let mut series = Series::with_capacity(600);
        for t in 0..2_000 {
            series.push(s(t, 1.0));
        }
        assert_eq!(series.len(), 600);
        assert!(
            series.samples.capacity() < 700,
            "{}",
            series.samples.capacity()
        );
    }

    #[test]
    fn huge_values_stay_finite() {
        let mut series = Series::with_capacity(2);
        series.push(s(1, f64::MAX));
        assert!(series.iter().all(|x| x.mib.is_finite()));
    }
}
