//! Small statistics over measured samples: percentiles by sorting, medians,
//! and the spread of repeated runs.
//!
//! Sample counts here are at most a few hundred thousand, so sorting a copy is
//! cheaper to get right than a histogram and exact.

use std::time::Duration;

use serde_json::{Value, json};

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of `samples`; all zero when there are none.
    pub fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| quantile(&ms, q);
        Percentiles {
            count: ms.len(),
            p50: at(0.50),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            max: ms.last().copied().unwrap_or(0.0),
            mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        }
    }

    /// The figures as JSON, in milliseconds with three decimals.
    pub fn to_json(self) -> Value {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        json!({
            "count": self.count,
            "p50_ms": r(self.p50),
            "p90_ms": r(self.p90),
            "p95_ms": r(self.p95),
            "p99_ms": r(self.p99),
            "p999_ms": r(self.p999),
            "max_ms": r(self.max),
            "mean_ms": r(self.mean),
        })
    }

    /// One line for the human summary.
    pub fn line(self) -> String {
        format!(
            "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms \
             ({} samples)",
            self.p50, self.p95, self.p99, self.p999, self.max, self.count
        )
    }
}

/// The `q` quantile of sorted `values` by the nearest-rank rule.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values`, the mean of the middle two for an even count.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Minimum, median and maximum of repeated figures, for the spread of runs.
pub fn spread(values: &[f64]) -> Value {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() {
        return json!(null);
    }
    json!({ "min": min, "median": median(values), "max": max, "runs": values.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.999), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
