//! Events published per source in 10-second buckets over the last ten
//! minutes: the dashboard's chart. Kept in memory by each replica; the chart
//! shows what this replica published (Prometheus has the sum over replicas).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};

pub const BUCKET_SECONDS: i64 = 10;
pub const BUCKETS: usize = 60;

/// `(bucket start in unix seconds, events)`, oldest first.
type Series = VecDeque<(i64, u64)>;

#[derive(Clone, Default)]
pub struct Rates(Arc<Mutex<BTreeMap<String, Series>>>);

impl Rates {
    pub fn record(&self, source: &str, n: u64) {
        self.record_at(source, n, Utc::now().timestamp());
    }

    fn record_at(&self, source: &str, n: u64, now: i64) {
        let bucket = now - now.rem_euclid(BUCKET_SECONDS);
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let series = all.entry(source.to_owned()).or_default();
        match series.back_mut() {
            Some((start, count)) if *start == bucket => *count += n,
            _ => series.push_back((bucket, n)),
        }
        while series.len() > BUCKETS {
            series.pop_front();
        }
    }

    /// Every bucket of the window, oldest first, zero where nothing was
    /// published: `(bucket start, events per second)`.
    pub fn series(&self, source: &str) -> Vec<(DateTime<Utc>, f64)> {
        self.series_at(source, Utc::now().timestamp())
    }

    fn series_at(&self, source: &str, now: i64) -> Vec<(DateTime<Utc>, f64)> {
        let current = now - now.rem_euclid(BUCKET_SECONDS);
        let all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let series = all.get(source);
        (0..BUCKETS as i64)
            .rev()
            .map(|i| current - i * BUCKET_SECONDS)
            .map(|start| {
                let count = series
                    .and_then(|s| s.iter().find(|(b, _)| *b == start))
                    .map_or(0, |(_, c)| *c);
                (
                    DateTime::from_timestamp(start, 0).unwrap_or_default(),
                    count as f64 / BUCKET_SECONDS as f64,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fill_and_age_out() {
        let r = Rates::default();
        r.record_at("order", 50, 1_000_003);
        r.record_at("order", 50, 1_000_009);
        r.record_at("order", 20, 1_000_011);
        let s = r.series_at("order", 1_000_012);
        assert_eq!(s.len(), BUCKETS);
        assert_eq!(
            s[BUCKETS - 1].1,
            2.0,
            "20 events in the current 10 s bucket"
        );
        assert_eq!(s[BUCKETS - 2].1, 10.0, "100 events in the previous one");
        assert_eq!(s[0].1, 0.0);
        let later = r.series_at("order", 1_000_012 + 600);
        assert!(
            later.iter().all(|(_, v)| *v == 0.0),
            "ten minutes later all aged out"
        );
        assert!(r.series_at("payment", 0).iter().all(|(_, v)| *v == 0.0));
    }
}
