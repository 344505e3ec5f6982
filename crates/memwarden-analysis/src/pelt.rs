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
    #[error("the series has {n} sample(s), fewer than the minimum segment size {min_size}")]
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
    let min_size = validate(values, params)?;
    Ok(Fast::new(values, params.penalty).run(min_size, params.jump))
}

const EPS: f64 = f64::EPSILON;

/// A double-double number: `hi + lo` with `|lo| <= ulp(hi) / 2`, about 106 bits.
#[derive(Debug, Clone, Copy, Default)]
struct Dd {
    hi: f64,
    lo: f64,
}

fn two_sum(a: f64, b: f64) -> Dd {
    let s = a + b;
    let bb = s - a;
    Dd {
        hi: s,
        lo: (a - (s - bb)) + (b - bb),
    }
}

fn quick_two_sum(a: f64, b: f64) -> Dd {
    let s = a + b;
    Dd {
        hi: s,
        lo: b - (s - a),
    }
}

/// Dekker's split, so that products need no fused multiply-add (not in the baseline x86-64).
fn split(a: f64) -> (f64, f64) {
    let t = 134_217_729.0 * a;
    let hi = t - (t - a);
    (hi, a - hi)
}

fn two_prod(a: f64, b: f64) -> Dd {
    let p = a * b;
    let (ah, al) = split(a);
    let (bh, bl) = split(b);
    Dd {
        hi: p,
        lo: ((ah * bh - p) + ah * bl + al * bh) + al * bl,
    }
}

impl Dd {
    fn add(self, o: Dd) -> Dd {
        let s = two_sum(self.hi, o.hi);
        quick_two_sum(s.hi, s.lo + self.lo + o.lo)
    }

    fn sqr(self) -> Dd {
        let p = two_prod(self.hi, self.hi);
        quick_two_sum(p.hi, p.lo + 2.0 * self.hi * self.lo)
    }
}

/// Everything the inner loop reads about one index, in one cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Node {
    s_hi: f64,
    s_lo: f64,
    q_hi: f64,
    q_lo: f64,
    /// Estimate of ruptures' total for the partition ending here, and its error bound.
    est: f64,
    err: f64,
    /// ruptures' exact total for the partition ending here, NaN until computed.
    exact: f64,
    /// The longest run of copies of the value starting here whose sums stay exact.
    exact_len: usize,
}

impl Node {
    fn exact(&self) -> Option<f64> {
        (!self.exact.is_nan()).then_some(self.exact)
    }
}

/// PELT with O(1) costs from double-double prefix sums, falling back to ruptures' arithmetic
/// only for comparisons too close to call.
///
/// For every partition total it keeps an estimate and a bound on the distance between that
/// estimate and the value ruptures computes (its numpy variance and its float sums stray from
/// the exact value by at most a few ulps times a log factor). Where the intervals of two
/// compared values do not overlap, both sides agree on the outcome; where they do, the exact
/// ruptures values are computed (and kept) for the partitions involved.
struct Fast<'a> {
    x: &'a [f64],
    pen: f64,
    /// Per index: prefix sums, and the running estimate of the partition ending there.
    node: Vec<Node>,
    /// Start of the run of equal values that each index belongs to.
    run_start: Vec<usize>,
    /// Relative error factor of ruptures' cost and of the float sums, and an absolute floor
    /// for the errors independent of the cost (the variance's mean error, our own prefix sums).
    rel: f64,
    abs: f64,
    /// Per partition end: the start of its last segment.
    parent: Vec<usize>,
    scratch: Vec<f64>,
    /// `1 / length` for every piece length: a multiplication in the inner loop instead of a
    /// division (its extra rounding is inside the cost's error bound).
    inv_len: Vec<f64>,
}

impl<'a> Fast<'a> {
    fn new(x: &'a [f64], pen: f64) -> Fast<'a> {
        let n = x.len();
        let shift = x.iter().sum::<f64>() / n as f64;
        let mut node = Vec::with_capacity(n + 1);
        let (mut ss, mut qq) = (Dd::default(), Dd::default());
        node.push(Node::default());
        let (mut max_abs, mut sum_abs_y, mut sum_y2) = (0.0f64, 0.0f64, 0.0f64);
        for &v in x {
            let y = v - shift;
            // y itself is rounded: keep its error term so the prefix sums are of the exact y.
            let ye = two_sum(v, -shift);
            ss = ss.add(ye);
            qq = qq.add(ye.sqr());
            node.push(Node {
                s_hi: ss.hi,
                s_lo: ss.lo,
                q_hi: qq.hi,
                q_lo: qq.lo,
                est: 0.0,
                err: 0.0,
                exact: f64::NAN,
                exact_len: 0,
            });
            max_abs = max_abs.max(v.abs());
            sum_abs_y += y.abs();
            sum_y2 += y * y;
        }
        let mut run_start = vec![0usize; n];
        for i in 1..n {
            run_start[i] = if x[i] == x[i - 1] {
                run_start[i - 1]
            } else {
                i
            };
        }
        // numpy's pairwise sums err by at most ~(25 + log2 n) ulps of the sum of magnitudes;
        // the variance adds a few roundings more. Generous on purpose: a loose bound only
        // sends more comparisons to the exact path.
        let k = 40.0 + (n as f64).log2().ceil();
        let rel = 2.0 * k * EPS;
        let dm = k * EPS * max_abs;
        let ours = 64.0 * (n as f64) * EPS * EPS * (sum_y2 + sum_abs_y * sum_abs_y);
        let abs = (n as f64) * dm * dm * 2.0 + ours + f64::MIN_POSITIVE;
        // The empty partition's total is exactly 0; the rest are computed on demand.
        node[0].exact = 0.0;
        for (nd, &v) in node.iter_mut().zip(x) {
            nd.exact_len = exact_sum_len(v);
        }
        Fast {
            x,
            pen,
            node,
            run_start,
            rel,
            abs,
            parent: vec![0; n + 1],
            scratch: Vec::new(),
            inv_len: (0..=n).map(|l| 1.0 / l.max(1) as f64).collect(),
        }
    }

    /// ruptures' value of the cost of `x[a..b]`.
    fn numpy_cost(&mut self, a: usize, b: usize) -> f64 {
        if self.run_start[b - 1] <= a && b - a <= self.node[a].exact_len {
            // A constant piece whose sums are exact: numpy's mean is the value, the cost 0.
            return 0.0;
        }
        numpy_l2_cost(&self.x[a..b], &mut self.scratch)
    }

    /// ruptures' total for the partition ending at `t`, computing the missing links of the
    /// chain (with ruptures' arithmetic) the first time it is asked for.
    fn exact_total(&mut self, t: usize) -> f64 {
        let mut chain = Vec::new();
        let mut u = t;
        while self.node[u].exact().is_none() {
            chain.push(u);
            u = self.parent[u];
        }
        while let Some(v) = chain.pop() {
            let p = self.parent[v];
            let base = self.node[p].exact().unwrap_or(0.0);
            let total = base + (self.numpy_cost(p, v) + self.pen);
            self.node[v].exact = total;
            self.node[v].est = total;
            self.node[v].err = 0.0;
        }
        self.node[t].exact().unwrap_or(0.0)
    }

    /// ruptures' total of the partition ending at `t` extended by the segment `t..b`.
    fn exact_candidate(&mut self, t: usize, b: usize) -> f64 {
        let base = self.exact_total(t);
        base + (self.numpy_cost(t, b) + self.pen)
    }

    /// Whether every start of `b` has ruptures' exact total known and a constant, exactly
    /// summable piece up to `end`: then they all have the same candidate total.
    fn uniform(&self, b: Block, end: usize) -> Option<f64> {
        let nf = &self.node[b.first];
        let f = nf.exact()?;
        (self.run_start[end - 1] <= b.first && end - b.first <= nf.exact_len).then_some(f)
    }

    fn run(mut self, min_size: usize, jump: usize) -> Vec<usize> {
        let n = self.x.len();
        let pen = self.pen;
        let mut exists = vec![false; n + 1];
        exists[0] = true;
        // The admissible starts, in ruptures' order, in blocks of consecutive starts that
        // share an exact total inside one flat stretch: there every start ties with the next,
        // ruptures keeps them all, and a block answers for all of them at once. Starts with no
        // partition (below min_size) never count in ruptures: its zip drops them in the step
        // that adds them, as they always come last. Leaving them out is the same.
        let mut admissible: Vec<Block> = Vec::new();
        // Per block: estimate of ruptures' total, error bound, exact total (NaN until known).
        let mut cands: Vec<Cand> = Vec::new();
        let mut kept: Vec<Block> = Vec::new();
        // Whether any block holds more than one start (noisy series never have one).
        let mut multi = false;
        for end in candidate_ends(n, min_size, jump) {
            let new = (end - min_size) / jump * jump;
            if exists[new] {
                let joins = admissible.last().is_some_and(|b| {
                    b.last + jump == new
                        && self.run_start[new] <= b.first
                        && self.node[b.first].exact().is_some()
                        && self.node[new].exact() == self.node[b.first].exact()
                });
                match admissible.last_mut() {
                    Some(b) if joins => {
                        b.last = new;
                        multi = true;
                    }
                    _ => admissible.push(Block {
                        first: new,
                        last: new,
                    }),
                }
            }
            // A block whose stretch ended no longer ties: back to single starts.
            if multi
                && admissible
                    .iter()
                    .any(|&b| b.first != b.last && self.uniform(b, end).is_none())
            {
                kept.clear();
                for &b in &admissible {
                    if b.first == b.last || self.uniform(b, end).is_some() {
                        kept.push(b);
                    } else {
                        kept.extend(
                            (b.first..=b.last)
                                .step_by(jump)
                                .map(|t| Block { first: t, last: t }),
                        );
                    }
                }
                std::mem::swap(&mut admissible, &mut kept);
            }
            cands.clear();
            let mut best = 0;
            let mut best_est = f64::INFINITY;
            // The two lowest lower bounds, to tell without another pass whether any other
            // start comes close to the best.
            let mut low1 = (f64::INFINITY, usize::MAX);
            let mut low2 = f64::INFINITY;
            let nb = self.node[end];
            let flat_from = self.run_start[end - 1];
            for (i, &b) in admissible.iter().enumerate() {
                let t = b.first;
                let na = self.node[t];
                let flat = flat_from <= t && end - t <= na.exact_len;
                let (total, e, x) = match na.exact() {
                    // ruptures' value outright: the piece's cost is exactly 0.
                    Some(f) if flat => {
                        let total = f + (0.0 + pen);
                        (total, 0.0, total)
                    }
                    _ => {
                        // Our value of the cost, from differences of the double-double prefix
                        // sums then plain floating point, and a bound on its distance to the
                        // exact one (the subtraction's rounding is bounded by the magnitudes
                        // it cancels).
                        let s = (nb.s_hi - na.s_hi) + (nb.s_lo - na.s_lo);
                        let q = (nb.q_hi - na.q_hi) + (nb.q_lo - na.q_lo);
                        let m = s * s * self.inv_len[end - t];
                        let c = (q - m).max(0.0);
                        let c_err = 8.0 * EPS * (q.abs() + m);
                        let v = c + pen;
                        let total = na.est + v;
                        let e = na.err + c_err + self.rel * (v + total) + self.abs;
                        (total, e, f64::NAN)
                    }
                };
                cands.push(Cand {
                    est: total,
                    err: e,
                    exact: x,
                });
                let lower = total - e;
                if lower < low1.0 {
                    low2 = low1.0;
                    low1 = (lower, i);
                } else if lower < low2 {
                    low2 = lower;
                }
                if total < best_est {
                    best_est = total;
                    best = i;
                }
            }

            // The winner: clear unless another start's interval reaches the best one's.
            let reach = cands[best].est + cands[best].err;
            let close = if jump == 1 {
                // Starts are distinct: the lowest lower bound other than the best's decides.
                (if low1.1 == best { low2 } else { low1.0 }) <= reach
            } else {
                // The last end may add a start twice; a start does not compete with itself.
                let t_best = admissible[best].first;
                (0..admissible.len()).any(|i| {
                    i != best
                        && cands[i].est - cands[i].err <= reach
                        && admissible[i].first != t_best
                })
            };
            if close {
                let mut win: Option<(usize, f64)> = None;
                for i in 0..admissible.len() {
                    if cands[i].est - cands[i].err > reach {
                        continue;
                    }
                    let v = if cands[i].exact.is_nan() {
                        self.exact_candidate(admissible[i].first, end)
                    } else {
                        cands[i].exact
                    };
                    cands[i].exact = v;
                    if win.is_none_or(|(_, w)| v < w) {
                        win = Some((i, v));
                    }
                }
                if let Some((i, _)) = win {
                    best = i;
                }
            }
            exists[end] = true;
            self.parent[end] = admissible[best].first;
            if cands[best].exact.is_nan() {
                self.node[end].est = cands[best].est;
                self.node[end].err = cands[best].err;
            } else {
                self.node[end].exact = cands[best].exact;
                self.node[end].est = cands[best].exact;
                self.node[end].err = 0.0;
            }

            // Pruning: keep the starts whose total is at most the best plus the penalty.
            let thr = self.node[end].est + pen;
            let thr_err = self.node[end].err + self.rel * thr;
            kept.clear();
            multi = false;
            let mut exact_thr: Option<f64> = None;
            for (&b, c) in admissible.iter().zip(&cands) {
                let keep = if c.est + c.err < thr - thr_err {
                    true
                } else if c.est - c.err > thr + thr_err {
                    false
                } else {
                    let v = if c.exact.is_nan() {
                        self.exact_candidate(b.first, end)
                    } else {
                        c.exact
                    };
                    let threshold = *exact_thr.get_or_insert_with(|| self.exact_total(end) + pen);
                    v <= threshold
                };
                if keep {
                    multi |= b.first != b.last;
                    kept.push(b);
                }
            }
            std::mem::swap(&mut admissible, &mut kept);
        }
        backtrack(&self.parent, n)
    }
}

/// A block's candidate total: our estimate, its error bound, ruptures' exact value (NaN until
/// computed).
#[derive(Debug, Clone, Copy)]
struct Cand {
    est: f64,
    err: f64,
    exact: f64,
}

/// Consecutive admissible starts `first, first + jump, …, last`.
#[derive(Debug, Clone, Copy)]
struct Block {
    first: usize,
    last: usize,
}

/// The most copies of `v` whose partial sums are all exact (so numpy's mean of them is `v` and
/// their L2 cost is exactly 0): `k·v` is exact while the significand of `v` and the bits of `k`
/// fit in 53 bits.
fn exact_sum_len(v: f64) -> usize {
    if v == 0.0 {
        return usize::MAX;
    }
    if !v.is_normal() || v.abs() >= 1e300 {
        return 0;
    }
    let mant = (v.to_bits() & ((1u64 << 52) - 1)) | (1u64 << 52);
    let spare = mant.trailing_zeros(); // 53 − significant bits
    if spare >= usize::BITS - 1 {
        usize::MAX
    } else {
        (1usize << spare) - 1
    }
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
