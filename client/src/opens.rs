//! The files this client holds open at the MDS, kept here as well: an MDS restart
//! forgets every open, so once the client reaches the restarted MDS (a new epoch in
//! the map) it names each handle of an earlier run again (`Request::Reopen`, open
//! replay), within the MDS's recovery window. A file unlinked while open then stays
//! alive to its last close across the restart, and a close after it closes an open
//! the MDS knows. The keeper (`crate::keeper`) makes sure an idle client reaches the
//! restarted MDS in time.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use nacre_proto::meta::Request;

use crate::namespace::NamespaceClient;
use crate::rpc::ClientError;

/// Handles of epoch `e` are numbered from `e << EPOCH_SHIFT` (the MDS's rule).
const EPOCH_SHIFT: u32 = 40;

#[derive(Default)]
pub struct HeldOpens {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// handle -> inode
    handles: HashMap<u64, u64>,
    /// The MDS epoch under which every handle is known to the MDS.
    replayed: u64,
}

impl HeldOpens {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes an open handle the MDS gave.
    pub fn opened(&self, handle: u64, ino: u64) {
        if handle != 0 {
            self.table().handles.insert(handle, ino);
        }
    }

    /// Forgets `handle`: its close is on its way.
    pub fn closing(&self, handle: u64) {
        self.table().handles.remove(&handle);
    }

    pub fn is_empty(&self) -> bool {
        self.table().handles.is_empty()
    }

    /// The files open now (each once).
    pub fn inos(&self) -> Vec<u64> {
        let mut inos: Vec<u64> = self.table().handles.values().copied().collect();
        inos.sort_unstable();
        inos.dedup();
        inos
    }

    /// Takes back at the MDS of epoch `mds_epoch`, reached through `ns`, every handle
    /// of an earlier MDS run (once per epoch). One the MDS no longer has the file of
    /// (destroyed after its recovery window) is lost, and said; a connection error is
    /// returned, for the caller's retry.
    /// `client` is this client's id: the handles are its again at the MDS.
    pub fn replay(
        &self,
        ns: &mut NamespaceClient,
        mds_epoch: u64,
        client: u64,
    ) -> Result<(), ClientError> {
        let stale: Vec<(u64, u64)> = {
            let t = self.table();
            if t.replayed >= mds_epoch {
                return Ok(());
            }
            t.handles
                .iter()
                .filter(|(&h, _)| h >> EPOCH_SHIFT < mds_epoch)
                .map(|(&h, &ino)| (h, ino))
                .collect()
        };
        if !stale.is_empty() {
            tracing::info!(
                "the MDS restarted (epoch {mds_epoch}): replaying {} open(s)",
                stale.len()
            );
        }
        for (handle, ino) in stale {
            match ns.call(&Request::Reopen {
                ino,
                handle,
                client,
            }) {
                Ok(_) => {
                    // Closed while its replay was on its way: close what we took back.
                    if !self.table().handles.contains_key(&handle) {
                        let _ = ns.call(&Request::Close { ino, handle });
                    }
                }
                Err(ClientError::Status(e)) => tracing::error!(
                    "the open of inode {ino} (handle {handle:#x}) was lost in the MDS restart: \
                     errno {e}"
                ),
                Err(e) => return Err(e),
            }
        }
        let mut t = self.table();
        t.replayed = t.replayed.max(mds_epoch);
        Ok(())
    }
}
