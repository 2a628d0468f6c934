//! The endpoint's address vector: peers in, peers out, and the fabric address of one.

use std::ffi::c_void;
use std::ptr;

use nacre_sys as sys;

use super::{Endpoint, PeerAddr, MAX_NAME};
use crate::error::{check, strerror, ErrorKind, Result};

/// Provider addresses beyond which sources are not mapped (AV_TABLE indexes count from
/// 0; a provider that hands out other values names no source, and messages from it
/// are taken for a stranger's).
const MAX_SOURCES: usize = 1 << 20;

impl Endpoint {
    /// Inserts a peer's name (from its [`Endpoint::name`]) into the address vector.
    pub fn insert_peer(&mut self, name: &[u8]) -> Result<PeerAddr> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(ErrorKind::BadPeerName {
                len: name.len(),
                text: format!("a fabric name is 1 to {MAX_NAME} bytes"),
            }
            .into());
        }
        // fi_av_insert reads as many bytes as the provider's address format says, and string
        // formats up to a NUL: pad a copy with zeros so a short name cannot be over-read.
        let mut padded = [0u8; MAX_NAME + 1];
        padded[..name.len()].copy_from_slice(name);
        let mut addr: sys::fi_addr_t = sys::FI_ADDR_UNSPEC;
        // SAFETY: av is open; padded is readable for any length the provider reads; addr
        // receives one fi_addr_t.
        let rc = unsafe {
            sys::fi_av_insert(
                self.av,
                padded.as_ptr() as *const c_void,
                1,
                &mut addr,
                0,
                ptr::null_mut(),
            )
        };
        if rc != 1 || addr == sys::FI_ADDR_UNSPEC {
            let text = if rc < 0 {
                strerror(rc)
            } else {
                "the provider did not accept it".into()
            };
            return Err(ErrorKind::BadPeerName {
                len: name.len(),
                text,
            }
            .into());
        }
        self.peers.push(addr);
        let peer = PeerAddr((self.peers.len() - 1) as u32);
        if let Ok(at) = usize::try_from(addr) {
            if at < MAX_SOURCES {
                if self.sources.len() <= at {
                    self.sources.resize(at + 1, 0);
                }
                self.sources[at] = peer.0 + 1;
            }
        }
        Ok(peer)
    }

    /// The peer behind a provider's source address (a completion's, with FI_SOURCE).
    #[inline]
    pub(super) fn source_peer(&self, addr: sys::fi_addr_t) -> Option<PeerAddr> {
        let at = usize::try_from(addr).ok()?;
        match self.sources.get(at).copied()? {
            0 => None,
            n => Some(PeerAddr(n - 1)),
        }
    }

    pub(super) fn fi_addr(&self, peer: PeerAddr) -> Result<sys::fi_addr_t> {
        self.peers
            .get(peer.0 as usize)
            .copied()
            .filter(|&a| a != sys::FI_ADDR_UNSPEC)
            .ok_or_else(|| ErrorKind::UnknownPeer(peer.0 as u64).into())
    }

    /// Takes a peer out of the address vector (the provider frees what it holds for it:
    /// shm unmaps its region, tcp;ofi_rxm closes its connection). Its `PeerAddr` is never
    /// given to another peer: later posts to it are refused as to an unknown peer. The
    /// caller must have nothing of its own in flight to the peer.
    pub fn remove_peer(&mut self, peer: PeerAddr) -> Result<()> {
        let mut addr = self.fi_addr(peer)?;
        // SAFETY: av is open; addr is one fi_addr_t this AV returned and still holds.
        let rc = unsafe { sys::fi_av_remove(self.av, &mut addr, 1, 0) };
        check("fi_av_remove", rc as isize)?;
        self.peers[peer.0 as usize] = sys::FI_ADDR_UNSPEC;
        if let Some(s) = usize::try_from(addr)
            .ok()
            .and_then(|a| self.sources.get_mut(a))
        {
            *s = 0;
        }
        Ok(())
    }
}
