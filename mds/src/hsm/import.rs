//! Import: a listing of the repository, page by page, each applied by the MDT in one
//! operation that also keeps the listing's position in the association's record. A
//! pass cut short (a restart, a repository that stopped answering) resumes after the
//! last key applied; memory holds one page whatever the repository's size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_proto::meta::hsm::policy;
use nacre_proto::meta::{Creds, FileKind, Head, Reply, Request};

use super::work::Work;
use super::{lock, Linked, Shared};
use crate::mdt::hsm::{HsmAdmin, ImportEntry};

/// Objects listed and applied at a time.
pub const PAGE: usize = 1000;
/// A failed pass is tried again after this long.
const RETRY: Duration = Duration::from_secs(5);

/// Queues a pass of association `id` (none if one is queued or running).
pub(crate) fn queue(shared: &Shared, id: u32) {
    if lock(&shared.importing).insert(id) {
        shared.queue.push_back(Work::Import(id));
    }
}

/// Starts a new pass from the first key (automatic import), unless one runs.
pub(crate) fn start_pass(shared: &Shared, id: u32) {
    if lock(&shared.importing).contains(&id) {
        return;
    }
    let Ok(records) = shared.mdt.repos() else {
        return;
    };
    let Some((_, mut rec)) = records.into_iter().find(|(i, _)| *i == id) else {
        return;
    };
    if !rec.importing {
        rec.importing = true;
        rec.cursor.clear();
        let put = HsmAdmin::PutRepo {
            id,
            rec,
            new: false,
        };
        if shared.admin(put).is_err() {
            return;
        }
    }
    queue(shared, id);
}

/// Runs association `id`'s pass from where its record says to its end.
pub(crate) fn pass(shared: &Arc<Shared>, id: u32) {
    match page(shared, id) {
        // More to list: the next page waits behind the work queued meanwhile, so a
        // long import never holds a mover from the loads readers wait for.
        Ok(false) => shared.queue.push_back(Work::Import(id)),
        Ok(true) => drop(lock(&shared.importing).remove(&id)),
        Err(why) => {
            lock(&shared.importing).remove(&id);
            tracing::warn!("import of association {id}: {why} (tried again in {RETRY:?})");
            // Resumed from its cursor by the auto thread, not holding a mover meanwhile.
            lock(&shared.retries).insert(id, Instant::now() + RETRY);
        }
    }
}

/// Queues the passes whose retry time has come.
pub(crate) fn retry_due(shared: &Shared) {
    let due: Vec<u32> = {
        let mut r = lock(&shared.retries);
        let now = Instant::now();
        let due = r
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| *id)
            .collect();
        r.retain(|_, t| *t > now);
        due
    };
    for id in due.into_iter().filter(|id| shared.linked(*id).is_some()) {
        queue(shared, id);
    }
}

/// Applies one page of association `id`'s pass; whether the pass is over.
fn page(shared: &Arc<Shared>, id: u32) -> Result<bool, String> {
    let Some(linked) = shared.linked(id) else {
        return Ok(true); // unlinked meanwhile
    };
    let records = shared.mdt.repos().map_err(|e| e.to_string())?;
    let Some((_, rec)) = records.into_iter().find(|(i, _)| *i == id) else {
        return Ok(true);
    };
    if !rec.importing || shared.stopping() {
        return Ok(true);
    }
    let task = lock(&shared.import_tasks)
        .entry(id)
        .or_insert_with(|| {
            shared
                .tasks
                .start("import", linked.repo.url().to_string(), 0)
        })
        .clone();
    let fail = |why: String| {
        lock(&shared.import_tasks).remove(&id);
        task.finish(Some(why.clone()));
        why
    };
    // The listing goes on from one page to the next; a new one (after a restart, a
    // failure, an unlink and link) starts after the last key applied.
    let kept = lock(&shared.listers).remove(&id);
    let mut lister = match kept {
        Some(l) => l,
        None => {
            let after = (!rec.cursor.is_empty()).then_some(rec.cursor.as_str());
            if let Some(key) = after {
                tracing::info!("import of {} resumes after {key}", linked.repo.url());
            }
            linked.repo.lister(after).map_err(|e| {
                linked.note_error(&e);
                fail(e.to_string())
            })?
        }
    };
    let page = linked.repo.next_page(&mut lister, PAGE).map_err(|e| {
        linked.note_error(&e);
        fail(e.to_string())
    })?;
    let finished = page.len() < PAGE;
    let cursor = page.last().map_or(rec.cursor.clone(), |o| o.key.clone());
    let n = page.len() as u64;
    let entries = page
        .into_iter()
        .map(|o| ImportEntry {
            key: o.key,
            size: o.size,
            mtime_ns: o.meta.mtime_ns.unwrap_or(o.mtime_ns),
            etag: o.etag,
            mode: o.meta.mode,
            uid: o.meta.uid,
            gid: o.meta.gid,
        })
        .collect();
    let op = HsmAdmin::Import {
        repo: id,
        entries,
        cursor,
        finished: finished && linked.auto_import & policy::DELETED == 0,
    };
    shared
        .admin(op)
        .map_err(|e| fail(format!("the MDT refused a page (errno {e})")))?;
    task.add(n);
    if !finished {
        lock(&shared.listers).insert(id, lister);
        return Ok(false);
    }
    if linked.auto_import & policy::DELETED != 0 {
        let gone = sweep(shared, &linked, rec.dir).map_err(fail)?;
        if gone > 0 {
            tracing::info!(
                "import of {}: {gone} deleted object(s) seen",
                linked.repo.url()
            );
        }
        // The pass is over only now: a restart during the sweep runs it again.
        let records = shared.mdt.repos().map_err(|e| fail(e.to_string()))?;
        let Some((_, mut rec)) = records.into_iter().find(|(i, _)| *i == id) else {
            lock(&shared.import_tasks).remove(&id);
            task.finish(Some("unlinked during the pass".into()));
            return Ok(true);
        };
        rec.importing = false;
        let put = HsmAdmin::PutRepo {
            id,
            rec,
            new: false,
        };
        shared
            .admin(put)
            .map_err(|e| fail(format!("the MDT refused the pass's end (errno {e})")))?;
    }
    lock(&shared.import_tasks).remove(&id);
    task.finish(None);
    Ok(true)
}

/// Deletions: a walk of the linked tree, each directory's files against the names
/// its repository prefix holds (one directory's listing in memory at a time); a clean
/// file whose object is gone goes too.
fn sweep(shared: &Shared, linked: &Linked, root: u64) -> Result<u64, String> {
    let head = Head {
        creds: Creds::default(),
        epoch: shared.mdt.epoch(),
        replay: None,
    };
    let mut gone = 0;
    let mut dirs = vec![(root, String::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        if shared.stopping() {
            break;
        }
        let names = linked.repo.names_in(&prefix).map_err(|e| {
            linked.note_error(&e);
            e.to_string()
        })?;
        let mut cookie = 0;
        loop {
            let page = Request::Readdir {
                dir,
                cookie,
                max: 1024,
            };
            let (entries, next, eof) = match shared.mdt.read(&head, &page) {
                Ok(Reply::Dir {
                    entries,
                    next_cookie,
                    eof,
                }) => (entries, next_cookie, eof),
                Ok(_) | Err(libc::ENOENT) => break, // removed meanwhile
                Err(e) => return Err(format!("reading directory {dir}: errno {e}")),
            };
            for e in entries {
                let Ok(name) = std::str::from_utf8(&e.name) else {
                    continue;
                };
                match e.kind {
                    FileKind::Dir => dirs.push((e.ino, format!("{prefix}{name}/"))),
                    FileKind::File if !names.contains(name) => {
                        let key = format!("{prefix}{name}");
                        let Ok(Some(i)) = shared.mdt.inode(e.ino) else {
                            continue;
                        };
                        let Some(h) = i.hsm.filter(|h| h.stored == key) else {
                            continue; // never in the repository: new here
                        };
                        let op = HsmAdmin::Vanished {
                            dir,
                            name: e.name.clone(),
                            ino: e.ino,
                            etag: h.etag,
                        };
                        if shared.admin(op).is_ok() {
                            gone += 1;
                        }
                    }
                    _ => {}
                }
            }
            if eof {
                break;
            }
            cookie = next;
        }
    }
    Ok(gone)
}
