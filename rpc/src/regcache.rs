//! A cache of registrations of the caller's buffers, so that a buffer used again (the
//! common case: an application's I/O buffers live long) is not registered again.
//!
//! Entries are exact ranges; a request hits when an entry contains its whole range.
//! The cache is bounded in bytes and entries, evicting the least recently used entry
//! that no operation uses. Every registration goes through
//! [`nacre_fabric::Endpoint::register_external`], whose contract the owner keeps: it
//! hands out descriptors only while it holds the caller's buffer, and drops an entry
//! (closing its key) whenever a peer might still reach memory the caller takes back.
//!
//! On providers whose registrations pin pages (EFA, verbs) the cache keeps nothing: it
//! cannot see memory being unmapped and mapped again, while libfabric's own MR cache
//! can (its memory monitor); there each call registers and releases, and libfabric's
//! cache makes that cheap.
//!
//! By default it keeps nothing anywhere ([`RegCacheMode::Off`]): a buffer is exposed to
//! servers for the one request that lends it, under a random key closed when the call
//! returns. [`RegCacheMode::Auto`] keeps registrations on software providers, where the
//! measured gain is at most a few tenths at some sizes (docs/performance.md), at the
//! cost of buffers that stay reachable (by servers that learned their key) after their
//! request.

use nacre_fabric::{Access, BulkDesc, Endpoint, ExternalRegion};

/// Whether the cache keeps registrations across calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegCacheMode {
    /// Keep them, unless the provider pins pages.
    Auto,
    /// Register and release on every call: a buffer is exposed for its request only.
    Off,
}

#[derive(Debug, Clone)]
pub struct RegCacheConfig {
    pub mode: RegCacheMode,
    /// Bytes registered at most.
    pub max_bytes: usize,
    pub max_entries: usize,
}

impl Default for RegCacheConfig {
    fn default() -> Self {
        RegCacheConfig {
            mode: RegCacheMode::Off,
            max_bytes: 1 << 30,
            max_entries: 256,
        }
    }
}

struct Entry {
    region: ExternalRegion,
    last_use: u64,
}

/// Counters, for benches and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

pub struct RegCache {
    cfg: RegCacheConfig,
    entries: Vec<Entry>,
    bytes: usize,
    clock: u64,
    pub stats: RegCacheStats,
}

impl RegCache {
    pub fn new(cfg: RegCacheConfig) -> RegCache {
        RegCache {
            cfg,
            entries: Vec::new(),
            bytes: 0,
            clock: 0,
            stats: RegCacheStats::default(),
        }
    }

    /// Whether registrations are kept across calls on `ep`.
    pub fn keeps(&self, ep: &Endpoint) -> bool {
        match self.cfg.mode {
            RegCacheMode::Off => false,
            RegCacheMode::Auto => !ep.pins_registrations(),
        }
    }

    /// A descriptor of `[ptr, ptr+len)` for peers' RMA with `access`, registering it
    /// unless an entry holds it already (with at least that access).
    ///
    /// # Safety
    /// The range must be memory the caller holds (mapped, readable and writable as the
    /// access says) until the descriptor's last use by a peer, or until
    /// [`RegCache::forget`] closes it.
    pub unsafe fn descriptor(
        &mut self,
        ep: &mut Endpoint,
        ptr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<BulkDesc, nacre_fabric::Error> {
        self.clock += 1;
        let (addr, clock) = (ptr as usize, self.clock);
        if let Some(e) = self.entries.iter_mut().find(|e| {
            let r = &e.region;
            r.addr() <= addr && addr + len <= r.addr() + r.len() && r.access().covers(access)
        }) {
            e.last_use = clock;
            self.stats.hits += 1;
            return e.region.remote(addr - e.region.addr(), len);
        }
        self.stats.misses += 1;
        self.make_room(ep, len);
        // SAFETY: the caller's contract is register_external's.
        let region = unsafe { ep.register_external(ptr, len, access)? };
        let desc = region.remote(0, len)?;
        self.bytes += len;
        self.entries.push(Entry {
            region,
            last_use: clock,
        });
        Ok(desc)
    }

    /// Drops every entry that overlaps `[ptr, ptr+len)`: their keys stop working for
    /// peers once no operation uses them. Called when the caller takes the memory back
    /// while a peer might still reach it (a request that failed or timed out), and after
    /// each call when the cache keeps nothing.
    pub fn forget(&mut self, ep: &mut Endpoint, ptr: *const u8, len: usize) {
        let (lo, hi) = (ptr as usize, ptr as usize + len);
        let mut i = 0;
        while i < self.entries.len() {
            let r = &self.entries[i].region;
            if r.addr() < hi && lo < r.addr() + r.len() {
                self.release(ep, i);
            } else {
                i += 1;
            }
        }
    }

    fn release(&mut self, ep: &mut Endpoint, i: usize) {
        let e = self.entries.swap_remove(i);
        self.bytes -= e.region.len();
        if let Err(e) = ep.deregister_external(e.region) {
            // Only while a local operation uses it, which the client never leaves
            // behind: the registration then closes with the endpoint.
            tracing::warn!("registration kept: {e}");
        }
    }

    /// Evicts least recently used idle entries until `len` more bytes and one more
    /// entry fit the bounds.
    fn make_room(&mut self, ep: &mut Endpoint, len: usize) {
        while self.bytes + len > self.cfg.max_bytes || self.entries.len() >= self.cfg.max_entries {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.region.busy() == 0)
                .min_by_key(|(_, e)| e.last_use)
                .map(|(i, _)| i);
            let Some(i) = victim else { break };
            self.release(ep, i);
            self.stats.evictions += 1;
        }
    }

    pub fn registered_bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
