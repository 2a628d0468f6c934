//! File ranges to and from a file's objects on the OSTs, as the mover sees them: a
//! load writes every mirror in sync, an export reads the first one in sync (reads
//! past an object's end are holes: zeros).

use std::time::Duration;

use nacre_proto::bootstrap::ClusterMap;
use nacre_proto::layout::{FileLayout, StripedLayout};
use nacre_rpc::objects::{Extent, IoOptions, OstRoute};
use nacre_rpc::{ClientEndpoint, ClientError, RpcConfig};

use crate::reach::Reach;

/// One object request may take this long.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The mover's endpoint, opened on first use (and again after a failure dropped it).
pub fn endpoint<'e>(
    reach: &Reach,
    slot: &'e mut Option<ClientEndpoint>,
) -> Result<&'e mut ClientEndpoint, ClientError> {
    if slot.is_none() {
        let cfg = RpcConfig {
            timeout: TIMEOUT,
            ..RpcConfig::default()
        };
        let mut ep = reach.open(cfg)?;
        // Nothing here is in a hurry next to the repository: a long wait naps
        // between polls rather than take the CPU the OSSs and the repository need.
        ep.set_patient(true);
        *slot = Some(ep);
    }
    Ok(slot.as_mut().expect("just opened"))
}

fn io(map: &ClusterMap) -> IoOptions {
    IoOptions::for_provider(map.servers.first().map_or("", |s| s.provider.as_str()))
}

/// The extents of copy `l` (routed by `routes`) that `len` bytes at file offset `at`
/// touch.
fn extents<'r>(
    l: &StripedLayout,
    routes: &'r [OstRoute],
    at: u64,
    len: u64,
) -> Result<Vec<Extent<'r>>, ClientError> {
    let pieces = l
        .pieces(at, len)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(Extent::of_pieces(l, routes, &pieces, at, 0))
}

/// Writes `data` at file offset `at` into every mirror of `layout` in sync.
pub fn write(
    ep: &mut ClientEndpoint,
    map: &ClusterMap,
    layout: &FileLayout,
    at: u64,
    data: &[u8],
) -> Result<(), ClientError> {
    for m in layout.in_sync() {
        let l = &layout.mirrors[m].stripes;
        let routes = OstRoute::each_in_map(map, l)?;
        ep.write_extents(&extents(l, &routes, at, data.len() as u64)?, data, io(map))?;
    }
    Ok(())
}

/// Fills `buf` with the file's bytes at offset `at` (holes and ends read as zeros).
pub fn read(
    ep: &mut ClientEndpoint,
    map: &ClusterMap,
    layout: &FileLayout,
    at: u64,
    buf: &mut [u8],
) -> Result<(), ClientError> {
    let Some(&m) = layout.in_sync().first() else {
        return Err(ClientError::Protocol("no copy in sync".into()));
    };
    let l = &layout.mirrors[m].stripes;
    let routes = OstRoute::each_in_map(map, l)?;
    let ext = extents(l, &routes, at, buf.len() as u64)?;
    let spans: Vec<(usize, usize)> = ext.iter().map(|e| (e.at, e.len)).collect();
    let got = ep.read_extents(&ext, buf, io(map))?;
    for ((start, len), got) in spans.into_iter().zip(got) {
        buf[start + got..start + len].fill(0);
    }
    Ok(())
}
