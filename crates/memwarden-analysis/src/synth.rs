//! Deterministic synthetic memory traces, for tests, benchmarks and demonstrations: the shapes
//! the analysis meets on real machines (a load, warm-up, an allocator's sawtooth, a slow leak, a
//! release), from a seeded generator so that every run, and any other tool fed the same numbers,
//! sees the same series.

/// A small deterministic generator (SplitMix64), so the series need no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal (sum of uniforms), mean 0, standard deviation 1.
    pub fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }
}

/// A training run's GPU memory in MiB, as `bytes / 1 MiB` of whole 2 MiB pages: idle, a load,
/// warm-up, a sawtooth of steps, a slow leak, a release. Flat stretches are exactly flat.
pub fn training_trace(n: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    let mut level = 300.0;
    for i in 0..n {
        let f = i as f64 / n as f64;
        if (0.1..0.12).contains(&f) {
            level += 900.0; // weights arriving
        } else if (0.12..0.2).contains(&f) {
            level += 20.0;
        } else if (0.5..0.9).contains(&f) && r.unit() < 0.05 {
            level += 2.0 * (1.0 + (r.unit() * 8.0).floor()); // a leak, page by page
        } else if f >= 0.9 && level > 400.0 {
            level -= 400.0;
        }
        let saw = if (0.2..0.5).contains(&f) {
            if i % 20 < 10 { 512.0 } else { 0.0 }
        } else {
            0.0
        };
        out.push(((level + saw) / 2.0).round() * 2.0);
    }
    out
}

/// Noisy piecewise-constant levels (float noise: no ties).
pub fn noisy_steps(n: usize, seed: u64, sigma: f64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    let mut level = 1000.0;
    (0..n)
        .map(|i| {
            if i % 97 == 0 {
                level += (r.unit() - 0.4) * 800.0;
            }
            level + sigma * r.normal()
        })
        .collect()
}
