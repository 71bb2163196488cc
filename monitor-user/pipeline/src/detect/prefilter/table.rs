//! The literal automaton laid out for the prefilter's inner loop.
//!
//! The library's DFA answers one transition at a time through a trait; the
//! prefilter walks every byte of every message, so the same automaton is
//! copied into a flat table shaped for that loop: transitions as
//! premultiplied `u32` state ids over the automaton's byte classes, and the
//! match states numbered first, so that "did any of four lanes reach a
//! match" is one comparison of their minimum.

use aho_corasick::{automaton::Automaton, dfa::DFA, Anchored};
use std::collections::HashMap;

/// A copy of an unanchored Standard-semantics DFA (see the module
/// documentation).
#[derive(Clone, Debug)]
pub(super) struct Table {
    /// Byte to class: bytes of one class move every state alike.
    classes: [u8; 256],
    /// Number of classes: the row length.
    stride: u32,
    /// Row of state `s` starts at `s` (ids are premultiplied by `stride`).
    trans: Vec<u32>,
    /// The start state.
    start: u32,
    /// States below this id are match states.
    pub match_below: u32,
    /// Per match state (id / stride): the patterns that end there.
    pub patterns: Vec<Vec<usize>>,
}

impl Table {
    /// Copies `dfa` (built unanchored, Standard semantics): every state
    /// reachable from the unanchored start, and every byte's transition.
    pub fn new(dfa: &DFA) -> Self {
        let start = dfa.start_state(Anchored::No).expect("unanchored DFA");
        // Discover the reachable states, with their full 256-byte rows.
        let mut index: HashMap<u32, usize> = HashMap::new();
        let mut order = vec![start];
        index.insert(start.as_u32(), 0);
        let mut rows: Vec<[usize; 256]> = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let s = order[i];
            assert!(!dfa.is_dead(s), "an unanchored search never dies");
            let mut row = [0usize; 256];
            for (b, slot) in row.iter_mut().enumerate() {
                let t = dfa.next_state(Anchored::No, s, b as u8);
                *slot = *index.entry(t.as_u32()).or_insert_with(|| {
                    order.push(t);
                    order.len() - 1
                });
            }
            rows.push(row);
            i += 1;
        }
        // Bytes whose columns are equal form a class.
        let mut classes = [0u8; 256];
        let mut columns: HashMap<Vec<usize>, u8> = HashMap::new();
        for b in 0..256 {
            let column: Vec<usize> = rows.iter().map(|r| r[b]).collect();
            let next = columns.len();
            let class = *columns
                .entry(column)
                .or_insert_with(|| u8::try_from(next).expect("at most 256 classes"));
            classes[b] = class;
        }
        let stride = columns.len() as u32;
        // Number match states first.
        let mut renumber: Vec<usize> = (0..order.len()).collect();
        renumber.sort_by_key(|&k| !dfa.is_match(order[k]));
        let mut new_id = vec![0u32; order.len()];
        for (n, &k) in renumber.iter().enumerate() {
            new_id[k] = u32::try_from(n)
                .ok()
                .and_then(|n| n.checked_mul(stride))
                .expect("table fits u32");
        }
        let matching = order.iter().filter(|&&s| dfa.is_match(s)).count();
        let mut trans = vec![0u32; order.len() * stride as usize];
        let mut patterns = vec![Vec::new(); matching];
        for (k, row) in rows.iter().enumerate() {
            let base = new_id[k] as usize;
            for b in 0..256 {
                trans[base + classes[b] as usize] = new_id[row[b]];
            }
            if dfa.is_match(order[k]) {
                let s = order[k];
                patterns[base / stride as usize] = (0..dfa.match_len(s))
                    .map(|j| dfa.match_pattern(s, j).as_usize())
                    .collect();
            }
        }
        // The invariant `next` relies on to skip its bounds check: every
        // state id (the start and every transition's target) begins a whole
        // row, and every class is inside a row.
        let row_ok = |t: u32| t.is_multiple_of(stride) && t as usize + stride as usize <= trans.len();
        assert!(
            row_ok(new_id[0]) && trans.iter().all(|&t| row_ok(t)) && classes.iter().all(|&c| u32::from(c) < stride),
            "prefilter table: a state id outside the table"
        );
        Self {
            classes,
            stride,
            trans,
            start: new_id[0],
            match_below: matching as u32 * stride,
            patterns,
        }
    }

    /// The start state.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// The state after `s` on byte `b`.
    ///
    /// # Safety
    /// `s` is this table's [`Table::start`] or a state this table's `next`
    /// returned. Each is the first index of a whole row and a class is
    /// less than a row's length (both checked in [`Table::new`]; the
    /// fields never change after), so the load is inside the table without
    /// a bounds check: that check was a compare and branch per byte of
    /// every message, on the prefilter's critical path.
    #[inline(always)]
    pub unsafe fn next(&self, s: u32, b: u8) -> u32 {
        let at = s as usize + self.classes[b as usize] as usize;
        debug_assert!(at < self.trans.len());
        // SAFETY: `at` is inside `trans` (see above).
        unsafe { *self.trans.get_unchecked(at) }
    }

    /// Is `s` a match state?
    #[inline(always)]
    pub fn is_match(&self, s: u32) -> bool {
        s < self.match_below
    }

    /// The patterns that end at match state `s`.
    pub fn patterns_of(&self, s: u32) -> &[usize] {
        &self.patterns[(s / self.stride) as usize]
    }

    /// Memory held, in bytes.
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.trans.len() * 4 + self.patterns.iter().map(|p| p.len() * 8 + 24).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::{MatchKind, StartKind};

    /// Every state and byte: the copy moves as the library's DFA does, and
    /// matches where it matches, with the same patterns.
    #[test]
    fn the_copy_moves_as_the_library_does() {
        let patterns = [
            "ghp_",
            "pat",
            "path",
            "PassWord",
            "akia",
            "ignore previous instructions",
            "é",
        ];
        let dfa = DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .build(patterns)
            .unwrap();
        let t = Table::new(&dfa);
        assert!(t.stride < 256, "letters of both cases share a class");
        let mut pairs = vec![(dfa.start_state(Anchored::No).unwrap(), t.start())];
        let mut seen: HashMap<u32, aho_corasick::automaton::StateID> = HashMap::new();
        while let Some((a, b)) = pairs.pop() {
            if let Some(&before) = seen.get(&b) {
                // One copy state stands for one library state.
                assert_eq!(before, a);
                continue;
            }
            seen.insert(b, a);
            assert_eq!(dfa.is_match(a), t.is_match(b));
            if t.is_match(b) {
                let mut want: Vec<usize> = (0..dfa.match_len(a))
                    .map(|j| dfa.match_pattern(a, j).as_usize())
                    .collect();
                let mut got = t.patterns_of(b).to_vec();
                want.sort_unstable();
                got.sort_unstable();
                assert_eq!(want, got);
            }
            for byte in 0..=255u8 {
                // SAFETY: `b` is `t`'s start or a state `t.next` returned.
                pairs.push((dfa.next_state(Anchored::No, a, byte), unsafe { t.next(b, byte) }));
            }
        }
        assert!(seen.len() > patterns.iter().map(|p| p.len()).sum::<usize>() / 2);
        assert!(t.heap_bytes() > 0);
    }
}
