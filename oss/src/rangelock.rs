//! A per-object table of block-range locks, pure code: writes take a range exclusively,
//! reads share it. Requests are granted in arrival order among those that conflict (a
//! later request never overtakes an earlier one it overlaps), and a request that conflicts
//! with nothing held or waiting is granted at once: disjoint writes run in parallel,
//! overlapping ones (including two unaligned writes that share an edge block) serialize.

use std::collections::VecDeque;
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// Names one request; unique within its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockId(pub u64);

#[derive(Debug, Clone)]
struct Entry {
    id: LockId,
    range: Range<u64>,
    mode: Mode,
}

impl Entry {
    fn conflicts(&self, range: &Range<u64>, mode: Mode) -> bool {
        let overlap = self.range.start < range.end && range.start < self.range.end;
        overlap && (self.mode == Mode::Exclusive || mode == Mode::Exclusive)
    }
}

#[derive(Debug, Default)]
pub struct RangeLocks {
    held: Vec<Entry>,
    waiting: VecDeque<Entry>,
    next: u64,
}

impl RangeLocks {
    pub fn new() -> RangeLocks {
        RangeLocks::default()
    }

    /// Asks for `range` (block numbers, end exclusive); returns the request's id and
    /// whether it is granted now. An empty range conflicts with nothing.
    pub fn request(&mut self, range: Range<u64>, mode: Mode) -> (LockId, bool) {
        let id = LockId(self.next);
        self.next += 1;
        let entry = Entry { id, range, mode };
        let blocked = self.held.iter().any(|h| h.conflicts(&entry.range, mode))
            || self.waiting.iter().any(|w| w.conflicts(&entry.range, mode));
        if blocked {
            self.waiting.push_back(entry);
        } else {
            self.held.push(entry);
        }
        (id, !blocked)
    }

    /// Releases a held lock (or withdraws a waiting request); returns the requests that
    /// this grants, in arrival order.
    pub fn release(&mut self, id: LockId) -> Vec<LockId> {
        if let Some(i) = self.held.iter().position(|h| h.id == id) {
            self.held.swap_remove(i);
        } else if let Some(i) = self.waiting.iter().position(|w| w.id == id) {
            self.waiting.remove(i);
        } else {
            return Vec::new();
        }
        self.grant_waiting()
    }

    fn grant_waiting(&mut self) -> Vec<LockId> {
        let mut granted = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            let w = &self.waiting[i];
            let blocked = self.held.iter().any(|h| h.conflicts(&w.range, w.mode))
                || self
                    .waiting
                    .iter()
                    .take(i)
                    .any(|e| e.conflicts(&w.range, w.mode));
            if blocked {
                i += 1;
            } else {
                let w = self.waiting.remove(i).expect("index in range");
                granted.push(w.id);
                self.held.push(w);
            }
        }
        granted
    }

    /// The requests still waiting, in arrival order (e.g. to fail them).
    pub fn waiting(&self) -> impl Iterator<Item = LockId> + '_ {
        self.waiting.iter().map(|w| w.id)
    }

    pub fn is_held(&self, id: LockId) -> bool {
        self.held.iter().any(|h| h.id == id)
    }

    pub fn is_idle(&self) -> bool {
        self.held.is_empty() && self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn overlapping_writes_serialize_disjoint_run_together() {
        let mut t = RangeLocks::new();
        let (a, ga) = t.request(0..2, Mode::Exclusive);
        let (b, gb) = t.request(1..3, Mode::Exclusive);
        let (c, gc) = t.request(5..6, Mode::Exclusive);
        assert!(ga && !gb && gc);
        assert_eq!(t.release(a), vec![b]);
        assert!(t.release(c).is_empty());
        assert!(t.release(b).is_empty());
        assert!(t.is_idle());
    }

    #[test]
    fn readers_share_and_writer_waits_for_all() {
        let mut t = RangeLocks::new();
        let (r1, g1) = t.request(0..10, Mode::Shared);
        let (r2, g2) = t.request(5..6, Mode::Shared);
        let (w, gw) = t.request(4..5, Mode::Exclusive);
        // A reader after a waiting writer it overlaps does not overtake it.
        let (r3, g3) = t.request(4..5, Mode::Shared);
        assert!(g1 && g2 && !gw && !g3);
        assert!(t.release(r2).is_empty());
        assert_eq!(t.release(r1), vec![w]);
        assert_eq!(t.release(w), vec![r3]);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Request(u64, u64, bool),
        Release(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..16, 1u64..6, any::<bool>()).prop_map(|(s, l, x)| Step::Request(s, s + l, x)),
            (0usize..64).prop_map(Step::Release),
        ]
    }

    fn conflict(a: &(Range<u64>, bool), b: &(Range<u64>, bool)) -> bool {
        a.0.start < b.0.end && b.0.start < a.0.end && (a.1 || b.1)
    }

    proptest! {
        /// Safety: no two held locks ever conflict. Order: of two conflicting requests,
        /// the earlier is granted first. Liveness: releasing everything held, again and
        /// again, grants every request. Disjointness: a request that conflicts with
        /// nothing held or waiting is granted at once.
        #[test]
        fn lock_table_invariants(steps in proptest::collection::vec(step(), 1..80)) {
            let mut t = RangeLocks::new();
            let mut reqs: Vec<(Range<u64>, bool)> = Vec::new();
            let mut held: Vec<LockId> = Vec::new();
            let mut waiting: Vec<LockId> = Vec::new();
            let mut grant_order: Vec<LockId> = Vec::new();
            for s in steps {
                match s {
                    Step::Request(a, b, x) => {
                        let mode = if x { Mode::Exclusive } else { Mode::Shared };
                        let r = (a..b, x);
                        let free = held.iter().chain(waiting.iter())
                            .all(|id| !conflict(&reqs[id.0 as usize], &r));
                        let (id, granted) = t.request(a..b, mode);
                        prop_assert_eq!(id.0 as usize, reqs.len());
                        reqs.push(r);
                        prop_assert_eq!(granted, free);
                        if granted { held.push(id); grant_order.push(id); } else { waiting.push(id); }
                    }
                    Step::Release(i) if !held.is_empty() => {
                        let id = held.remove(i % held.len());
                        for g in t.release(id) {
                            waiting.retain(|w| *w != g);
                            held.push(g);
                            grant_order.push(g);
                        }
                    }
                    Step::Release(_) => {}
                }
                for (i, a) in held.iter().enumerate() {
                    for b in &held[i + 1..] {
                        prop_assert!(!conflict(&reqs[a.0 as usize], &reqs[b.0 as usize]));
                    }
                }
            }
            while let Some(id) = held.pop() {
                for g in t.release(id) {
                    waiting.retain(|w| *w != g);
                    held.push(g);
                    grant_order.push(g);
                }
            }
            prop_assert!(waiting.is_empty(), "every request is granted in the end");
            prop_assert!(t.is_idle());
            for (i, a) in grant_order.iter().enumerate() {
                for b in &grant_order[i + 1..] {
                    if conflict(&reqs[a.0 as usize], &reqs[b.0 as usize]) {
                        prop_assert!(a < b, "{:?} overtook {:?}", b, a);
                    }
                }
            }
        }
    }
}
