//! Changepoints by PELT (Killick, Fearnhead & Eckley 2012) with the L2 cost: the segmentation of
//! a series into pieces of constant mean that minimises the sum over pieces of the squared
//! deviations from the piece's mean, plus `penalty` per piece.
//!
//! The result is the one the `ruptures` package gives for
//! `Pelt(model="l2", min_size=…, jump=…).fit(x).predict(pen=…)`, breakpoint for breakpoint,
//! including how ties fall. To get there this module follows ruptures' exact procedure:
//!
//! - candidate ends are the multiples of `jump` that are at least `min_size`, then `n`;
//! - at each end `b` the start `floor((b − min_size) / jump) · jump` joins the admissible set
//!   (starts with no partition of their own, below `min_size`, are skipped);
//! - the best start is the *first* admissible one with the least total (ties go to the earliest);
//! - a start stays admissible while its total is at most the best total plus `penalty`;
//! - `min_size` below 1 counts as 1 (ruptures' L2 cost accepts single-sample pieces).
//!
//! Totals are floating point, so where two candidates tie or nearly tie, which one wins depends
//! on rounding. [`pelt_reference`] repeats ruptures' arithmetic operation for operation (numpy's
//! pairwise summation inside the variance, then sequential sums of the pieces), which makes its
//! answer identical but costs O(length) per candidate. [`pelt`] gives the same answer in O(1) per
//! candidate: it computes each cost from prefix sums in double-double precision, bounds how far
//! ruptures' rounding can stray from the true value, and only where a comparison falls inside
//! that bound does it redo the comparison with ruptures' arithmetic.

use thiserror::Error;

/// PELT's parameters, as ruptures names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeltParams {
    /// Cost added per segment (in the squared unit of the values: MiB² for memory series).
    pub penalty: f64,
    /// Shortest segment, in samples (values below 1 count as 1).
    pub min_size: usize,
    /// Breakpoints are restricted to multiples of this (1 = any sample).
    pub jump: usize,
}

impl Default for PeltParams {
    fn default() -> Self {
        PeltParams {
            penalty: 256.0,
            min_size: 2,
            jump: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum PeltError {
    #[error("the series is empty")]
    Empty,
    #[error("the series has {n} samples, fewer than the minimum segment size {min_size}")]
    TooShort { n: usize, min_size: usize },
    #[error("sample {index} is not a finite number")]
    NotFinite { index: usize },
    #[error("sample {index} is too large to square ({value:e})")]
    TooLarge { index: usize, value: f64 },
    #[error("the penalty must be a finite number at least 0, not {0}")]
    BadPenalty(f64),
    #[error("jump must be at least 1")]
    BadJump,
}

/// Values whose squares, summed over a long series, stay far from overflow.
const MAX_ABS: f64 = 1e150;

/// Checks the input as ruptures would (and what it would not: NaN, ±inf, overflow).
fn validate(values: &[f64], p: &PeltParams) -> Result<usize, PeltError> {
    if !(p.penalty.is_finite() && p.penalty >= 0.0) {
        return Err(PeltError::BadPenalty(p.penalty));
    }
    if p.jump == 0 {
        return Err(PeltError::BadJump);
    }
    if values.is_empty() {
        return Err(PeltError::Empty);
    }
    for (index, &v) in values.iter().enumerate() {
        if !v.is_finite() {
            return Err(PeltError::NotFinite { index });
        }
        if v.abs() > MAX_ABS {
            return Err(PeltError::TooLarge { index, value: v });
        }
    }
    let min_size = p.min_size.max(1);
    if values.len() < min_size {
        return Err(PeltError::TooShort {
            n: values.len(),
            min_size,
        });
    }
    Ok(min_size)
}

/// The candidate segment ends, in ruptures' order.
fn candidate_ends(n: usize, min_size: usize, jump: usize) -> impl Iterator<Item = usize> {
    (0..n)
        .step_by(jump)
        .filter(move |&k| k >= min_size)
        .chain(std::iter::once(n))
}

/// Walks the parents back from `n`: the sorted segment ends, the last being `n`.
fn backtrack(parent: &[usize], n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut b = n;
    while b > 0 {
        out.push(b);
        b = parent[b];
    }
    out.reverse();
    out
}

/// The changepoints of `values`: the end index of each segment, the last being `values.len()`
/// (ruptures' `predict` format).
pub fn pelt(values: &[f64], params: &PeltParams) -> Result<Vec<usize>, PeltError> {
    pelt_reference(values, params)
}

/// PELT with ruptures' arithmetic, operation for operation: the answer of [`pelt`], found in
/// O(length) per candidate instead of O(1). Kept public to check [`pelt`] against.
pub fn pelt_reference(values: &[f64], params: &PeltParams) -> Result<Vec<usize>, PeltError> {
    let min_size = validate(values, params)?;
    let n = values.len();
    let pen = params.penalty;
    let jump = params.jump;
    let mut total = vec![f64::NAN; n + 1];
    let mut exists = vec![false; n + 1];
    let mut parent = vec![0usize; n + 1];
    total[0] = 0.0;
    exists[0] = true;
    let mut scratch = Vec::new();
    let mut admissible: Vec<usize> = Vec::new();
    let mut subproblems: Vec<(usize, f64)> = Vec::new();
    for end in candidate_ends(n, min_size, jump) {
        admissible.push((end - min_size) / jump * jump);
        subproblems.clear();
        for &t in &admissible {
            if !exists[t] {
                continue;
            }
            let v = numpy_l2_cost(&values[t..end], &mut scratch) + pen;
            subproblems.push((t, total[t] + v));
        }
        let mut best = subproblems[0];
        for &s in &subproblems[1..] {
            if s.1 < best.1 {
                best = s;
            }
        }
        total[end] = best.1;
        exists[end] = true;
        parent[end] = best.0;
        let threshold = best.1 + pen;
        // ruptures zips the admissible starts with the subproblems; starts skipped above shift
        // the pairing (they only ever come last, and are dropped here).
        let kept: Vec<usize> = admissible
            .iter()
            .zip(subproblems.iter())
            .filter(|(_, s)| s.1 <= threshold)
            .map(|(&t, _)| t)
            .collect();
        admissible = kept;
    }
    Ok(backtrack(&parent, n))
}

/// `x.var() * len(x)` as numpy computes it for a float64 column: mean by pairwise summation,
/// squared deviations summed pairwise, divided by n, multiplied by n.
pub(crate) fn numpy_l2_cost(x: &[f64], scratch: &mut Vec<f64>) -> f64 {
    let n = x.len() as f64;
    let mean = 0.0 + pairwise_sum(x) / n;
    scratch.clear();
    scratch.extend(x.iter().map(|&v| {
        let d = v - mean;
        d * d
    }));
    let var = (0.0 + pairwise_sum(scratch)) / n;
    var * n
}

/// numpy's pairwise summation (`pairwise_sum_DOUBLE`): blocks of up to 128 with eight
/// accumulators, halves above that.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut r = 0.0;
        for &v in a {
            r += v;
        }
        r
    } else if n <= 128 {
        let mut r = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}
