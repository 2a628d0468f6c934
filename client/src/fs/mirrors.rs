//! Mirrored files on the client (client fan-out, see docs/client.md): a change goes to
//! every mirror in sync before it is acknowledged, a read to the first mirror in sync
//! that answers, and a mirror one of whose OSTs the cluster map shows down is marked
//! stale at the MDS before the change is acknowledged without it.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use nacre_proto::bootstrap::{ClusterMap, Role, RoleKind};
use nacre_proto::layout::{FileLayout, StripedLayout};
use nacre_proto::meta::{Reply, Request};

use super::client::Conn;
use super::errors::{attr_of, failure, protocol};
use super::Client;
use crate::objects::{Extent, IoOptions, KeyBlock};
use crate::rpc::ClientError;

/// A file's layout and the mirrors this client knows to be stale (bit `m` for mirror
/// `m`), shared by the threads of one handle.
#[derive(Debug)]
pub(crate) struct MirrorSet {
    layout: FileLayout,
    stale: AtomicU32,
    /// The map version whose OST epochs `epochs` holds (0: none yet).
    checked: AtomicU64,
    /// The epoch of each OST of the layout, in object order, as of `checked`.
    epochs: Mutex<Vec<u64>>,
}

impl MirrorSet {
    /// `layout` as the MDS just gave it, with the OST epochs of `map` (the client's
    /// map when it asked).
    pub(crate) fn new(layout: FileLayout, map: &ClusterMap) -> MirrorSet {
        let set = MirrorSet {
            layout,
            stale: AtomicU32::new(0),
            checked: AtomicU64::new(0),
            epochs: Mutex::new(Vec::new()),
        };
        set.learn(&set.layout.clone());
        set.moved(map);
        set
    }

    /// Whether a server of one of the layout's OSTs changed (a new epoch: restarted or
    /// replaced) since the last look; the first look only notes the epochs. Cheap when
    /// the map did not change since.
    fn moved(&self, map: &ClusterMap) -> bool {
        if self.checked.swap(map.version, Ordering::AcqRel) == map.version {
            return false;
        }
        let now: Vec<u64> = self
            .layout
            .objects()
            .map(|o| {
                let role = Role {
                    kind: RoleKind::Oss,
                    index: o.ost,
                };
                map.target(role).map_or(0, |t| t.epoch)
            })
            .collect();
        let mut seen = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        let moved = *seen != now && !seen.is_empty();
        *seen = now;
        moved
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

    /// Takes the stale marks of `layout` (the MDS's answer, the truth as of now).
    fn learn(&self, layout: &FileLayout) {
        let bits = layout
            .mirrors
            .iter()
            .enumerate()
            .filter(|(_, m)| m.stale)
            .fold(0u32, |b, (k, _)| b | 1 << k);
        self.stale.store(bits, Ordering::Release);
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
        self.learn_layout(set, &req)
    }

    /// Asks the MDS `req` (a layout request) and takes the stale marks it answers.
    fn learn_layout(&mut self, set: &MirrorSet, req: &Request) -> Result<(), ClientError> {
        match self.ns.call(req)? {
            Reply::Layout(l) if l.mirrors.len() == set.mirrors() => {
                set.learn(&l);
                Ok(())
            }
            other => Err(ClientError::Protocol(format!(
                "expected the file's layout, got {other:?}"
            ))),
        }
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
    ///
    /// A mirror that was stale while its OSS was away is not read once it is back: when
    /// an OST of the file changed epoch since the last read, the marks are asked of the
    /// MDS again first (a writer marks a mirror stale before its write is acknowledged).
    pub(super) fn read_mirror<R>(
        &mut self,
        ino: u64,
        set: &MirrorSet,
        mut f: impl FnMut(&mut Conn, &StripedLayout) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        if set.mirrors() > 1 && set.moved(&self.map) {
            self.learn_layout(set, &Request::GetLayout { ino })?;
        }
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

/// Bytes a resync copies per step.
const RESYNC_CHUNK: u64 = 8 << 20;
/// Copies a resync makes before it gives up on a file that keeps being written.
const RESYNC_TRIES: usize = 3;

impl Client {
    /// Copies a mirrored file's first copy in sync over its stale ones and marks them
    /// in sync (`lfs mirror resync`); returns the mirrors it brought back. EBUSY while a
    /// handle may write the file, or when a write open or a truncate came during each
    /// of its tries (the MDS refuses the mark then: the copy may have missed it).
    pub fn resync(&self, path: &str) -> io::Result<Vec<usize>> {
        let ino = self.with_conn(true, |c| c.ns.resolve(path))?;
        for _ in 0..RESYNC_TRIES {
            // Registered before the layout and size are read: whatever changes them
            // after this spoils the resync.
            let size = attr_of(self.meta(true, &Request::ResyncStart { ino })?)?.size;
            let layout = match self.meta(true, &Request::GetLayout { ino })? {
                Reply::Layout(l) => l,
                other => return Err(protocol(format!("expected a layout, got {other:?}"))),
            };
            let stale: Vec<usize> = (0..layout.mirrors.len())
                .filter(|&m| layout.mirrors[m].stale)
                .collect();
            let Some(&src) = layout.in_sync().first() else {
                return Err(protocol("a layout with no copy in sync".into()));
            };
            for &m in &stale {
                self.copy_mirror(
                    &layout.mirrors[src].stripes,
                    &layout.mirrors[m].stripes,
                    size,
                )?;
            }
            let mut spoiled = false;
            for &m in &stale {
                let req = Request::MirrorState {
                    ino,
                    mirror: m as u32,
                    stale: false,
                };
                match self.meta(true, &req) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                        spoiled = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !spoiled {
                return Ok(stale);
            }
        }
        Err(io::Error::from_raw_os_error(libc::EBUSY))
    }

    /// Makes copy `to` hold what copy `from` holds of a file of `size` bytes: emptied
    /// first, so that what `from` holds as holes stays holes, then every chunk that
    /// is not all zeros, then each object set to its size.
    fn copy_mirror(&self, from: &StripedLayout, to: &StripedLayout, size: u64) -> io::Result<()> {
        let n = to.objects.len() as u64;
        self.change_objects(n, |c, keys| c.truncate_stripes(to, 0, keys, 0))?;
        let mut buf = vec![0u8; RESYNC_CHUNK.min(size) as usize];
        let mut at = 0;
        while at < size {
            let len = (size - at).min(RESYNC_CHUNK);
            let buf = &mut buf[..len as usize];
            let pieces = from
                .pieces(at, len)
                .map_err(|e| failure(libc::EINVAL, e.to_string()))?;
            let got = self.with_conn(true, |c| {
                let routes = c.routes(from)?;
                let ex = Extent::of_pieces(from, &routes, &pieces, at, 0);
                let io = c.io;
                c.ns.ep.read_extents(&ex, buf, io)
            })?;
            for (p, got) in pieces.iter().zip(got) {
                let s = (p.file_offset - at) as usize;
                buf[s + got..s + p.len as usize].fill(0);
            }
            if buf.iter().any(|&b| b != 0) {
                let count = KeyBlock::needed(pieces.iter().map(|p| p.len as usize));
                self.change_objects(count, |c, keys| {
                    let routes = c.routes(to)?;
                    let ex = Extent::of_pieces(to, &routes, &pieces, at, 0);
                    let io = IoOptions {
                        keys: Some(*keys),
                        ..c.io
                    };
                    c.ns.ep.write_extents(&ex, buf, io)
                })?;
            }
            at += len;
        }
        self.change_objects(n, |c, keys| c.truncate_stripes(to, size, keys, 0))
    }
}
