//! Series shared by the tests: memory traces of the shapes the analysis meets, built from a
//! seeded generator so that every run (and ruptures) sees the same numbers.

#![allow(dead_code)]

use memwarden_analysis::pelt::PeltParams;

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

/// The cases compared with ruptures: shapes with and without exact ties, several penalties,
/// minimum sizes and jumps.
pub fn comparison_cases() -> Vec<(Vec<f64>, PeltParams)> {
    let p = |penalty, min_size, jump| PeltParams {
        penalty,
        min_size,
        jump,
    };
    let mut r = Rng::new(7);
    let noise: Vec<f64> = (0..300).map(|_| r.normal() * 5.0).collect();
    let ramp: Vec<f64> = (0..200).map(|i| i as f64).collect();
    let flat = vec![4096.0; 120];
    let step: Vec<f64> = (0..150)
        .map(|i| if i < 70 { 100.0 } else { 1124.0 })
        .collect();
    let saw: Vec<f64> = (0..160).map(|i| ((i % 16) * 64) as f64).collect();
    let decimals: Vec<f64> = (0..200).map(|i| 0.1 * ((i / 25) as f64) + 0.3).collect();
    let mib_bytes: Vec<f64> = training_trace(400, 3)
        .iter()
        .map(|v| (v * 1_048_576.0 + 4096.0 * 3.0) / 1_048_576.0)
        .collect();
    vec![
        (noisy_steps(500, 1, 10.0), p(2000.0, 2, 1)),
        (noisy_steps(500, 2, 30.0), p(5000.0, 5, 1)),
        (noisy_steps(400, 3, 10.0), p(1000.0, 2, 5)),
        (noisy_steps(333, 4, 10.0), p(800.0, 3, 7)),
        (noise.clone(), p(10.0, 2, 1)),
        (noise.clone(), p(100.0, 1, 1)),
        (noise, p(50.0, 4, 3)),
        (ramp.clone(), p(30.0, 2, 1)),
        (ramp.clone(), p(100.0, 3, 2)),
        (ramp, p(7.0, 1, 1)),
        (flat.clone(), p(1.0, 2, 1)),
        (flat, p(0.0, 3, 4)),
        (step.clone(), p(256.0, 2, 1)),
        (step, p(256.0, 5, 10)),
        (saw.clone(), p(1000.0, 2, 1)),
        (saw, p(100.0, 3, 5)),
        (decimals.clone(), p(0.01, 2, 1)),
        (decimals, p(0.5, 5, 3)),
        (training_trace(600, 1), p(256.0, 2, 1)),
        (training_trace(600, 2), p(4096.0, 2, 1)),
        (training_trace(300, 5), p(64.0, 3, 2)),
        (mib_bytes, p(256.0, 2, 1)),
        (vec![5.0], p(1.0, 1, 1)),
        (vec![5.0, 6.0], p(1.0, 2, 1)),
        (vec![1.0, 9.0, 1.0, 9.0, 1.0], p(0.5, 1, 1)),
        (vec![3.0; 7], p(1.0, 2, 10)),
    ]
}
