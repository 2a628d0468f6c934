//! Request/reply matching with deadlines: a pure table that the caller drives with the
//! current time. Bounded: a full table refuses new requests (back-pressure).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutstandingError {
    #[error("{0} requests already outstanding")]
    Full(usize),
    #[error("request id {0} is already outstanding")]
    Duplicate(u64),
}

/// Outstanding requests: id -> (deadline, caller's token).
#[derive(Debug)]
pub struct Outstanding<T> {
    by_id: HashMap<u64, (Instant, T)>,
    by_deadline: BTreeSet<(Instant, u64)>,
    capacity: usize,
    next_id: u64,
}

impl<T> Outstanding<T> {
    pub fn with_capacity(capacity: usize) -> Self {
        Outstanding {
            by_id: HashMap::with_capacity(capacity),
            by_deadline: BTreeSet::new(),
            capacity,
            next_id: 1,
        }
    }

    /// A fresh request id (never 0; ids of expired requests are not reused soon).
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// The id [`Outstanding::next_id`] will give next: every id given from now on is
    /// at least this.
    pub fn peek_next_id(&self) -> u64 {
        self.next_id
    }

    /// The caller's token of outstanding request `id`.
    pub fn token(&self, id: u64) -> Option<&T> {
        self.by_id.get(&id).map(|(_, t)| t)
    }

    /// The outstanding requests with an id of at least `first`, and their tokens.
    pub fn iter_from(&self, first: u64) -> impl Iterator<Item = (u64, &T)> + '_ {
        self.by_id
            .iter()
            .filter(move |(&id, _)| id >= first)
            .map(|(&id, (_, t))| (id, t))
    }

    /// Whether a request with an id of at least `first` is outstanding.
    pub fn any_from(&self, first: u64) -> bool {
        self.by_id.keys().any(|&id| id >= first)
    }

    pub fn insert(
        &mut self,
        id: u64,
        now: Instant,
        timeout: Duration,
        token: T,
    ) -> Result<(), OutstandingError> {
        if self.by_id.len() >= self.capacity {
            return Err(OutstandingError::Full(self.capacity));
        }
        if self.by_id.contains_key(&id) {
            return Err(OutstandingError::Duplicate(id));
        }
        // A timeout too large to add means "no deadline" in practice: a century.
        let deadline = now
            .checked_add(timeout)
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
            .unwrap_or(now);
        self.by_id.insert(id, (deadline, token));
        self.by_deadline.insert((deadline, id));
        Ok(())
    }

    /// The reply for `id` arrived: its token, or None for an unknown or expired id (a late
    /// or forged reply, which the caller drops).
    pub fn complete(&mut self, id: u64) -> Option<T> {
        let (deadline, token) = self.by_id.remove(&id)?;
        self.by_deadline.remove(&(deadline, id));
        Some(token)
    }

    /// Removes and returns every request whose deadline is not after `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.by_deadline.pop_first();
            if let Some((_, token)) = self.by_id.remove(&id) {
                out.push((id, token));
            }
        }
        out
    }

    /// The earliest deadline, for a caller that wants to sleep or poll until then.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|&(d, _)| d)
    }

    /// Whether `id` is outstanding (sent, not answered, not expired).
    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_replies_and_expires_the_rest() {
        let t0 = Instant::now();
        let mut p = Outstanding::with_capacity(2);
        let (a, b) = (p.next_id(), p.next_id());
        p.insert(a, t0, Duration::from_secs(1), "a").unwrap();
        p.insert(b, t0, Duration::from_secs(5), "b").unwrap();
        assert_eq!(
            p.insert(99, t0, Duration::ZERO, "c"),
            Err(OutstandingError::Full(2))
        );
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(p.expire(t0).is_empty());
        assert_eq!(p.expire(t0 + Duration::from_secs(2)), vec![(a, "a")]);
        assert_eq!(p.complete(a), None, "expired ids are gone");
        assert_eq!(p.complete(b), Some("b"));
        assert!(p.is_empty());
        p.insert(b, t0, Duration::ZERO, "b").unwrap();
        assert_eq!(
            p.insert(b, t0, Duration::ZERO, "b"),
            Err(OutstandingError::Duplicate(b))
        );
    }
}
