//! Loading released files (lazy load and `nacre repo restore`).
//!
//! A file loads in chunks of [`CHUNK`] bytes. The first request for a released file
//! starts its whole load: the chunks the request needs go to the front of the movers'
//! queue, the rest to the back, so a reader waits only for what it reads while the
//! file fills behind it (as FSx loads a file on first access). Each request is
//! answered once its chunks are in every mirror in sync; once all are, the MDT clears
//! the file's released mark (if its data version is still the one the load started
//! from) and every waiter hears that the file is whole.
//!
//! What was loaded is known only in memory: after a restart the file is still
//! released and loads again from the start, rewriting the same bytes; it is never
//! presented as complete before every chunk is in. A repository that fails (after its
//! own bounded retries), an object that changed since it was listed, or an OST that
//! does not answer fails the load: every waiter gets EIO, and the next read starts
//! over.

use std::sync::{Arc, Mutex};

use nacre_proto::layout::FileLayout;
use nacre_proto::meta::hsm::HsmReply;
use nacre_proto::meta::Reply;
use nacre_rpc::ClientEndpoint;

use super::work::{Task, Work};
use super::{lock, transfer, Linked, Shared};
use crate::mdt::hsm::{is_released, HsmAdmin};
use crate::mdt::perm::{may, R};
use crate::mdt::HsmJob;

/// Bytes loaded by one repository read.
pub const CHUNK: u64 = 8 << 20;

/// A file being loaded.
pub(crate) struct Load {
    ino: u64,
    /// The data version the load started from.
    version: u64,
    size: u64,
    layout: FileLayout,
    linked: Arc<Linked>,
    key: String,
    etag: String,
    task: Task,
    state: Mutex<LoadState>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Queued,
    Loading,
    Loaded,
}

struct LoadState {
    chunks: Vec<Chunk>,
    loaded: usize,
    waiters: Vec<Waiter>,
    /// The load failed: no more chunks are loaded for it.
    failed: bool,
}

/// A request waiting for chunks `first..=last`.
struct Waiter {
    job: HsmJob,
    first: usize,
    last: usize,
}

/// A restore request: answered at once if its range is loaded already, else when it is.
pub(crate) fn ask(shared: &Arc<Shared>, job: HsmJob, ino: u64, offset: u64, len: u64) {
    let inode = match shared.mdt.inode(ino) {
        Ok(Some(i)) => i,
        Ok(None) => return job.answer(Err(libc::ENOENT)),
        Err(e) => return job.answer(Err(e)),
    };
    if !may(&job.creds, &inode, R) {
        return job.answer(Err(libc::EACCES));
    }
    if !is_released(&inode) {
        return job.answer(Ok(loaded(true)));
    }
    let Some(load) = start(shared, &inode) else {
        return job.answer(Err(libc::EIO));
    };
    if load.size == 0 {
        // Nothing to load: an empty file.
        return finish(
            shared,
            &load,
            vec![Waiter {
                job,
                first: 0,
                last: 0,
            }],
        );
    }
    let end = match len {
        0 => load.size,
        n => offset.saturating_add(n).min(load.size),
    };
    let first = (offset.min(load.size.saturating_sub(1)) / CHUNK) as usize;
    let last = (end.max(1) - 1) / CHUNK;
    let (first, last) = (first, (last as usize).max(first));
    let mut st = lock(&load.state);
    if st.failed {
        drop(st);
        return job.answer(Err(libc::EIO));
    }
    if st.chunks[first..=last].iter().all(|&c| c == Chunk::Loaded) {
        drop(st);
        return job.answer(Ok(loaded(false)));
    }
    for c in (first..=last).rev() {
        if st.chunks[c] == Chunk::Queued {
            shared.queue.push_front(Work::Chunk(load.clone(), c as u32));
        }
    }
    st.waiters.push(Waiter { job, first, last });
}

fn loaded(whole: bool) -> Reply {
    Reply::Hsm(HsmReply::Loaded { whole })
}

/// The load of `inode` under way, or a new one with every chunk queued behind the
/// readers' (None: its association is gone, or it has no layout).
fn start(shared: &Arc<Shared>, inode: &crate::mdt::Inode) -> Option<Arc<Load>> {
    let h = inode.hsm.as_ref()?;
    let mut loads = lock(&shared.loads);
    if let Some(l) = loads.get(&inode.ino) {
        if l.version == h.version && !lock(&l.state).failed {
            return Some(l.clone());
        }
    }
    let Some(linked) = shared.linked(h.repo) else {
        tracing::warn!(
            "inode {}: released under association {}, which is gone",
            inode.ino,
            h.repo
        );
        return None;
    };
    let layout = inode.file_layout()?;
    let n = inode.size.div_ceil(CHUNK) as usize;
    let load = Arc::new(Load {
        ino: inode.ino,
        version: h.version,
        size: inode.size,
        layout,
        task: shared.tasks.start("restore", h.stored.clone(), inode.size),
        linked,
        key: h.stored.clone(),
        etag: h.etag.clone(),
        state: Mutex::new(LoadState {
            chunks: vec![Chunk::Queued; n],
            loaded: 0,
            waiters: Vec::new(),
            failed: false,
        }),
    });
    for c in 0..n {
        shared.queue.push_back(Work::Chunk(load.clone(), c as u32));
    }
    loads.insert(inode.ino, load.clone());
    Some(load)
}

/// Loads one chunk (if nobody has yet), then answers whoever it completes.
pub(crate) fn load_chunk(
    shared: &Arc<Shared>,
    ep: &mut Option<ClientEndpoint>,
    load: &Arc<Load>,
    chunk: u32,
) {
    let c = chunk as usize;
    {
        let mut st = lock(&load.state);
        if st.failed || st.chunks[c] != Chunk::Queued {
            return;
        }
        st.chunks[c] = Chunk::Loading;
    }
    let start = c as u64 * CHUNK;
    let end = (start + CHUNK).min(load.size);
    if let Err(why) = copy_in(shared, ep, load, start, end) {
        return fail(shared, load, why);
    }
    load.task.add(end - start);
    let ready = {
        let mut st = lock(&load.state);
        st.chunks[c] = Chunk::Loaded;
        st.loaded += 1;
        if st.loaded == st.chunks.len() {
            Some(std::mem::take(&mut st.waiters))
        } else {
            let chunks = st.chunks.clone();
            let (done, wait): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut st.waiters)
                .into_iter()
                .partition(|w| chunks[w.first..=w.last].iter().all(|&c| c == Chunk::Loaded));
            st.waiters = wait;
            for w in done {
                w.job.answer(Ok(loaded(false)));
            }
            None
        }
    };
    if let Some(waiters) = ready {
        finish(shared, load, waiters);
    }
}

/// Bytes `start..end` from the repository into the file's objects.
fn copy_in(
    shared: &Shared,
    ep: &mut Option<ClientEndpoint>,
    load: &Load,
    start: u64,
    end: u64,
) -> Result<(), String> {
    let data = load
        .linked
        .repo
        .read(&load.key, start..end, &load.etag)
        .map_err(|e| {
            load.linked.note_error(&e);
            e.to_string()
        })?;
    if data.len() as u64 != end - start {
        return Err(format!(
            "{}: {} bytes where {} were listed",
            load.key,
            data.len(),
            end - start
        ));
    }
    let map = shared.map().ok_or("no cluster map yet")?;
    let endpoint = transfer::endpoint(&shared.reach, ep).map_err(|e| e.to_string())?;
    transfer::write(endpoint, &map, &load.layout, start, &data).map_err(|e| {
        *ep = None; // a fresh endpoint next time
        format!("writing to the OSTs: {e}")
    })
}

/// Every chunk is in: the MDT clears the released mark, and every waiter hears it.
fn finish(shared: &Arc<Shared>, load: &Arc<Load>, waiters: Vec<Waiter>) {
    let result = shared.admin(HsmAdmin::Loaded {
        ino: load.ino,
        version: load.version,
    });
    forget(shared, load);
    let reply = match result {
        Ok(_) => {
            load.task.finish(None);
            tracing::debug!("inode {} loaded ({} bytes)", load.ino, load.size);
            Ok(loaded(true))
        }
        // The file changed meanwhile (imported anew, or emptied): ask again.
        Err(e) => {
            load.task
                .finish(Some(format!("not marked loaded: errno {e}")));
            Err(libc::EAGAIN)
        }
    };
    for w in waiters {
        w.job.answer(reply.clone());
    }
}

fn fail(shared: &Arc<Shared>, load: &Arc<Load>, why: String) {
    tracing::warn!("inode {}: load from {} failed: {why}", load.ino, load.key);
    let waiters = {
        let mut st = lock(&load.state);
        st.failed = true;
        std::mem::take(&mut st.waiters)
    };
    forget(shared, load);
    load.task.finish(Some(why));
    for w in waiters {
        w.job.answer(Err(libc::EIO));
    }
}

fn forget(shared: &Shared, load: &Arc<Load>) {
    let mut loads = lock(&shared.loads);
    if loads.get(&load.ino).is_some_and(|l| Arc::ptr_eq(l, load)) {
        loads.remove(&load.ino);
    }
}
