//! What a sink has accepted and not yet settled, for the backlog gauges.
//!
//! Every alert a sink accepts (into its memory queue or its spool) is
//! entered here with the second it was accepted, and leaves when it is
//! settled: delivered, or given up on and counted in `sink_dropped_total`.
//! Sinks settle in order (queues and spools are FIFO, and a full spool drops
//! its oldest), so the ledger is a queue of per-second runs: its length is
//! `sink_backlog`, the age of its head `sink_oldest_pending_seconds`.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus::{Gauge, IntGauge};

/// The unsettled alerts of one sink.
pub struct Backlog {
    /// (unix second accepted, alerts accepted in it), oldest first.
    runs: Mutex<VecDeque<(u64, u64)>>,
    count: IntGauge,
    oldest: Gauge,
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Backlog {
    /// An empty ledger reporting to `count` and `oldest`.
    pub fn new(count: IntGauge, oldest: Gauge) -> Backlog {
        count.set(0);
        oldest.set(0.0);
        Backlog {
            runs: Mutex::new(VecDeque::new()),
            count,
            oldest,
        }
    }

    /// `n` alerts accepted now.
    pub fn accept(&self, n: u64) {
        self.accept_at(unix_now(), n);
    }

    /// `n` alerts accepted at unix second `at` (alerts an earlier run left
    /// in a spool carry their own time).
    pub fn accept_at(&self, at: u64, n: u64) {
        if n == 0 {
            return;
        }
        let mut runs = self.runs.lock().expect("backlog lock");
        match runs.back_mut() {
            Some(last) if last.0 >= at => last.1 += n,
            _ => runs.push_back((at, n)),
        }
        self.count.add(n as i64);
        self.show_oldest(&runs);
    }

    /// Takes back the newest alert (accepted, then refused by a full queue).
    pub fn retract(&self) {
        let mut runs = self.runs.lock().expect("backlog lock");
        if let Some(last) = runs.back_mut() {
            last.1 -= 1;
            if last.1 == 0 {
                runs.pop_back();
            }
            self.count.dec();
        }
        self.show_oldest(&runs);
    }

    /// The `n` oldest alerts are settled (delivered or dropped).
    pub fn settle(&self, mut n: u64) {
        let mut runs = self.runs.lock().expect("backlog lock");
        let mut settled = 0;
        while n > 0 {
            let Some(first) = runs.front_mut() else { break };
            let take = first.1.min(n);
            first.1 -= take;
            n -= take;
            settled += take;
            if first.1 == 0 {
                runs.pop_front();
            }
        }
        self.count.sub(settled as i64);
        self.show_oldest(&runs);
    }

    /// Alerts not yet settled.
    pub fn pending(&self) -> u64 {
        self.runs.lock().expect("backlog lock").iter().map(|r| r.1).sum()
    }

    /// Refreshes the age gauge (the clock moves between accepts).
    pub fn refresh(&self) {
        let runs = self.runs.lock().expect("backlog lock");
        self.show_oldest(&runs);
    }

    fn show_oldest(&self, runs: &VecDeque<(u64, u64)>) {
        self.oldest
            .set(runs.front().map_or(0.0, |r| unix_now().saturating_sub(r.0) as f64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_oldest_first_and_counts_exactly() {
        let b = Backlog::new(IntGauge::new("b", "b").unwrap(), Gauge::new("o", "o").unwrap());
        let now = unix_now();
        b.accept_at(now - 100, 3);
        b.accept_at(now - 10, 2);
        b.accept(4);
        assert_eq!(b.pending(), 9);
        assert_eq!(b.count.get(), 9);
        assert!(b.oldest.get() >= 100.0);
        b.settle(4);
        assert_eq!(b.count.get(), 5);
        assert!((10.0..100.0).contains(&b.oldest.get()), "{}", b.oldest.get());
        // Settling more than is pending stops at zero.
        b.settle(50);
        assert_eq!(b.count.get(), 0);
        assert_eq!(b.oldest.get(), 0.0);
        // Out-of-order times join the last run: the head stays the oldest.
        b.accept_at(now - 5, 1);
        b.accept_at(now - 50, 1);
        assert_eq!(b.pending(), 2);
        assert!(b.oldest.get() < 50.0);
        b.retract();
        b.retract();
        b.retract();
        assert_eq!((b.pending(), b.count.get()), (0, 0));
    }
}
