//! A log-linear latency histogram (64 sub-buckets per power of two, so
//! about 1.5 % relative error) that serialises sparsely and merges by adding,
//! which is what combining the results of several generator processes needs.

use serde::{Deserialize, Serialize};

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = 64 * SUB;

/// Counts of values (nanoseconds, by convention) in log-linear buckets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hist {
    #[serde(with = "sparse")]
    counts: Vec<u64>,
    /// Number of values recorded.
    pub total: u64,
    /// Largest value recorded.
    pub max: u64,
    /// Sum of the values, for the mean (a float: serde's buffering of
    /// tagged enums has no 128-bit integers).
    pub sum: f64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            sum: 0.0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < (2 * SUB) as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let shift = e - SUB_BITS;
    (shift as usize) * SUB + (v >> shift) as usize
}

fn value_at(i: usize) -> u64 {
    if i < 2 * SUB {
        return i as u64;
    }
    let shift = (i / SUB - 1) as u32;
    let m = (i % SUB + SUB) as u64;
    (m << shift) + (1u64 << shift) / 2
}

impl Hist {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
        self.sum += v as f64;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// The value at quantile `q` (0..=1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value_at(i).min(self.max);
            }
        }
        self.max
    }

    /// The mean; 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum / self.total as f64
        }
    }
}

mod sparse {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(counts: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(u32, u64)> = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i as u32, *c))
            .collect();
        pairs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let pairs: Vec<(u32, u64)> = Vec::deserialize(d)?;
        let mut counts = vec![0; super::BUCKETS];
        for (i, c) in pairs {
            if let Some(slot) = counts.get_mut(i as usize) {
                *slot = c;
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut h = Hist::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for q in [0.5, 0.9, 0.99, 0.999] {
            let want = q * 100_000_000.0;
            let got = h.quantile(q) as f64;
            assert!(
                (got - want).abs() / want < 0.02,
                "q={q} got={got} want={want}"
            );
        }
        let json = serde_json::to_string(&h).unwrap();
        let back: Hist = serde_json::from_str(&json).unwrap();
        assert_eq!(back.quantile(0.99), h.quantile(0.99));
        let mut m = Hist::default();
        m.merge(&back);
        m.merge(&h);
        assert_eq!(m.total, 200_000);
    }

    #[test]
    fn index_is_monotonic_and_inverts() {
        let mut last = 0;
        for v in (0..1_000_000u64).step_by(7) {
            let i = index(v);
            assert!(i >= last);
            last = i;
            let back = value_at(i);
            assert!((back as f64 - v as f64).abs() <= v as f64 / 60.0 + 1.0);
        }
        assert!(index(u64::MAX) < BUCKETS);
    }
}
