//! Mirrored files on the client (client fan-out, see docs/client.md): a change goes to
//! every mirror in sync before it is acknowledged, a read to the first mirror in sync
//! that answers, and a mirror one of whose OSTs the cluster map shows down is marked
//! stale at the MDS before the change is acknowledged without it.

use std::sync::atomic::{AtomicU32, Ordering};

use nacre_proto::layout::{FileLayout, StripedLayout};
use nacre_proto::meta::{Reply, Request};

use super::client::Conn;
use crate::rpc::ClientError;

/// A file's layout and the mirrors this client knows to be stale (bit `m` for mirror
/// `m`), shared by the threads of one handle.
#[derive(Debug)]
pub(crate) struct MirrorSet {
    layout: FileLayout,
    stale: AtomicU32,
}

impl MirrorSet {
    pub(crate) fn new(layout: FileLayout) -> MirrorSet {
        let set = MirrorSet {
            layout,
            stale: AtomicU32::new(0),
        };
        set.learn(&set.layout.clone());
        set
    }

    pub(crate) fn layout(&self) -> &FileLayout {
        &self.layout
    }

    /// The geometry all mirrors share.
    pub(crate) fn geometry(&self) -> &StripedLayout {
        self.layout.geometry()
    }

    pub(crate) fn mirrors(&self) -> usize {
        self.layout.mirrors.len()
    }

    pub(crate) fn stripes(&self, mirror: usize) -> &StripedLayout {
        &self.layout.mirrors[mirror].stripes
    }

    /// The mirrors in sync as far as this client knows, in the order reads try them.
    pub(crate) fn in_sync(&self) -> Vec<usize> {
        let stale = self.stale.load(Ordering::Acquire);
        (0..self.mirrors())
            .filter(|m| stale & (1 << m) == 0)
            .collect()
    }

    /// Takes the stale marks of `layout` (the MDS's answer) as well.
    fn learn(&self, layout: &FileLayout) {
        let bits = layout
            .mirrors
            .iter()
            .enumerate()
            .filter(|(_, m)| m.stale)
            .fold(0u32, |b, (k, _)| b | 1 << k);
        self.stale.fetch_or(bits, Ordering::AcqRel);
    }

    /// The mirror in sync that holds `ost`.
    fn in_sync_on(&self, ost: u32) -> Option<usize> {
        self.in_sync().into_iter().find(|&m| {
            self.layout.mirrors[m]
                .stripes
                .objects
                .iter()
                .any(|o| o.ost == ost)
        })
    }
}

impl Conn {
    /// After `err` from a change to inode `ino`: if it is a down OST of a mirror in sync
    /// and another mirror is in sync, marks that mirror stale at the MDS (the change
    /// then goes on without it: Ok). Otherwise `err` stands.
    pub(super) fn drop_mirror(
        &mut self,
        ino: u64,
        set: &MirrorSet,
        err: ClientError,
    ) -> Result<(), ClientError> {
        let ClientError::TargetDown(ost) = err else {
            return Err(err);
        };
        let Some(mirror) = set.in_sync_on(ost) else {
            return Err(err);
        };
        if set.in_sync().len() < 2 {
            return Err(err);
        }
        tracing::warn!("inode {ino}: OST {ost} is down, mirror {mirror} marked stale");
        let req = Request::MirrorState {
            ino,
            mirror: mirror as u32,
            stale: true,
        };
        // Marking twice leaves the same state: no replay key needed.
        match self.ns.call(&req)? {
            Reply::Layout(l) => set.learn(&l),
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected a layout, got {other:?}"
                )))
            }
        }
        set.stale.fetch_or(1 << mirror, Ordering::AcqRel);
        Ok(())
    }

    /// Runs `f` on every mirror in sync (its index and objects); a mirror whose OST is
    /// down is marked stale and left out, as [`Conn::drop_mirror`] says.
    pub(super) fn each_mirror(
        &mut self,
        ino: u64,
        set: &MirrorSet,
        mut f: impl FnMut(&mut Conn, usize, &StripedLayout) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        for m in set.in_sync() {
            if let Err(e) = f(self, m, set.stripes(m)) {
                self.drop_mirror(ino, set, e)?;
            }
        }
        Ok(())
    }

    /// Runs the read `f` on the first mirror in sync that answers: a mirror whose OST is
    /// down, whose server left, or whose connection failed, gives way to the next one.
    pub(super) fn read_mirror<R>(
        &mut self,
        set: &MirrorSet,
        mut f: impl FnMut(&mut Conn, &StripedLayout) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        let live = set.in_sync();
        let mut last = None;
        for (k, &m) in live.iter().enumerate() {
            match f(self, set.stripes(m)) {
                Err(e) if k + 1 < live.len() && elsewhere(&e) => {
                    tracing::debug!("mirror {m}: {e}; reading the next mirror");
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or(ClientError::Protocol("no mirror in sync".into())))
    }
}

/// Whether a read that failed with `e` may be served by another mirror.
fn elsewhere(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::TargetDown(_)
            | ClientError::ServerGone
            | ClientError::Fabric(_)
            | ClientError::Timeout(_)
            | ClientError::Expired { .. }
    )
}
