//! One limit on the bytes all partial messages hold together.
//!
//! Each stream may hold one message of up to `max_frame_bytes` while it
//! arrives, which bounds a stream but not a host: many streams each in the
//! middle of a large message would hold them all. Every framer and HTTP
//! connection half charges what it holds to the pipeline's [`Budget`]; a
//! partial message that would take it past its limit is dropped instead
//! (`frame_errors_total{reason="memory_budget"}`) and its stream
//! resynchronises at the next message, as after a capture gap.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

/// The shared limit (cheap to clone: clones share the count).
#[derive(Clone, Debug)]
pub struct Budget {
    used: Arc<AtomicUsize>,
    max: usize,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Budget {
        Budget {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A budget that never refuses (tests, tools).
    pub fn unlimited() -> Budget {
        Budget::new(usize::MAX)
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// What one holder has charged to a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Budget,
    held: usize,
}

impl Charge {
    /// Nothing charged yet.
    pub fn new(budget: &Budget) -> Charge {
        Charge {
            budget: budget.clone(),
            held: 0,
        }
    }

    /// Would holding `bytes` in all (instead of what is held now) stay
    /// within the budget?
    pub fn fits(&self, bytes: usize) -> bool {
        bytes <= self.held || self.budget.used().saturating_sub(self.held).saturating_add(bytes) <= self.budget.max
    }

    /// Records that `bytes` are held now.
    pub fn set(&mut self, bytes: usize) {
        if bytes >= self.held {
            self.budget.used.fetch_add(bytes - self.held, Ordering::Relaxed);
        } else {
            self.budget.used.fetch_sub(self.held - bytes, Ordering::Relaxed);
        }
        self.held = bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_and_are_given_back() {
        let b = Budget::new(100);
        let mut x = Charge::new(&b);
        let mut y = Charge::new(&b);
        assert!(x.fits(60));
        x.set(60);
        assert!(y.fits(40) && !y.fits(41));
        y.set(40);
        assert_eq!(b.used(), 100);
        // Shrinking always fits; growing past the limit does not.
        assert!(x.fits(10) && !x.fits(61));
        x.set(10);
        assert_eq!(b.used(), 50);
        drop(y);
        assert_eq!(b.used(), 10);
        drop(x);
        assert_eq!(b.used(), 0);
    }
}
