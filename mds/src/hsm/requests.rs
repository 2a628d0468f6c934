//! Link, unlink, export, release, a file's state and the listing of associations.

use std::sync::Arc;

use nacre_proto::meta::hsm::{policy, FileHsm, HsmReply, HsmRequest, RepoInfo, RepoSpec};
use nacre_proto::meta::{Creds, FileKind, Head, Reply, Request};
use nacre_repo::{PosixMeta, RepoError};
use nacre_rpc::ClientEndpoint;

use super::{import, lock, transfer, Linked, Shared};
use crate::mdt::hsm::{self, HsmAdmin, RepoRecord, CONFLICT, DIRTY};
use crate::mdt::perm::is_owner;
use crate::mdt::{HsmJob, Inode};

/// Runs a request a mover took, and answers it.
pub(crate) fn run(shared: &Arc<Shared>, ep: &mut Option<ClientEndpoint>, job: HsmJob) {
    let result = match &job.req {
        HsmRequest::Link { dir, spec } => link(shared, &job.creds, *dir, spec),
        HsmRequest::Unlink { dir } => unlink(shared, &job.creds, *dir),
        HsmRequest::Export { ino } => export(shared, ep, &job.creds, *ino, false),
        HsmRequest::Release { ino } => release(shared, &job.creds, *ino),
        _ => Err(libc::EINVAL),
    };
    job.answer(result.map(|()| Reply::Hsm(HsmReply::Done)));
}

/// The errno a repository error is reported with (the MDS log has the whole text).
fn errno_of(e: &RepoError) -> i32 {
    match e {
        RepoError::Config(_) => libc::EINVAL,
        RepoError::NotFound { .. } => libc::ENOENT,
        RepoError::Denied { .. } => libc::EACCES,
        RepoError::Changed { .. } => libc::ESTALE,
        RepoError::Failed { .. } => libc::EHOSTUNREACH,
    }
}

fn inode(shared: &Shared, ino: u64) -> Result<Inode, i32> {
    shared.mdt.inode(ino)?.ok_or(libc::ENOENT)
}

fn link(shared: &Arc<Shared>, creds: &Creds, dir: u64, spec: &RepoSpec) -> Result<(), i32> {
    if creds.uid != 0 {
        return Err(libc::EPERM);
    }
    let d = inode(shared, dir)?;
    if d.kind != FileKind::Dir {
        return Err(libc::ENOTDIR);
    }
    // Checked here first, so no repository is asked for a link that cannot be made
    // (the MDT checks again when it makes it).
    if d.hsm.is_some() {
        return Err(libc::EEXIST);
    }
    let head = Head {
        creds: creds.clone(),
        epoch: shared.mdt.epoch(),
        replay: None,
    };
    let first = Request::Readdir {
        dir,
        cookie: 0,
        max: 1,
    };
    if let Ok(Reply::Dir { entries, .. }) = shared.mdt.read(&head, &first) {
        if !entries.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
    }
    let mut rec = RepoRecord {
        dir,
        path: spec.path.clone(),
        url: spec.url.clone(),
        endpoint: spec.endpoint.clone(),
        region: spec.region.clone(),
        access_key_id: spec.access_key_id.clone(),
        secret_access_key: spec.secret_access_key.clone(),
        auto_import: spec.auto_import,
        auto_export: spec.auto_export,
        interval_secs: spec.interval_secs,
        importing: spec.import_now,
        ..RepoRecord::default()
    };
    let records = shared.mdt.repos().map_err(|_| libc::EIO)?;
    let id = records.iter().map(|(id, _)| *id).max().unwrap_or(0) + 1;
    let linked = Linked::open(id, &rec).map_err(|e| {
        tracing::warn!("repo link {}: {e}", spec.url);
        errno_of(&e)
    })?;
    // One clear error now rather than at the first read: the bucket is there, the
    // credentials are accepted, the endpoint answers.
    linked.repo.check().map_err(|e| {
        tracing::warn!("repo link {}: {e}", spec.url);
        errno_of(&e)
    })?;
    rec.url = linked.repo.url().to_string();
    shared.admin(HsmAdmin::PutRepo {
        id,
        rec: rec.clone(),
        new: true,
    })?;
    lock(&shared.repos).insert(id, Arc::new(linked));
    tracing::info!("directory {dir} linked to {} (association {id})", rec.url);
    if spec.import_now {
        import::queue(shared, id);
    }
    Ok(())
}

fn unlink(shared: &Arc<Shared>, creds: &Creds, dir: u64) -> Result<(), i32> {
    if creds.uid != 0 {
        return Err(libc::EPERM);
    }
    let records = shared.mdt.repos().map_err(|_| libc::EIO)?;
    let (id, _) = records
        .into_iter()
        .find(|(_, r)| r.dir == dir)
        .ok_or(libc::ENOENT)?;
    shared.admin(HsmAdmin::DelRepo { id })?;
    lock(&shared.repos).remove(&id);
    lock(&shared.listers).remove(&id);
    if let Some(task) = lock(&shared.import_tasks).remove(&id) {
        task.finish(Some("unlinked".into()));
    }
    tracing::info!("directory {dir} unlinked (association {id})");
    Ok(())
}

/// The repository state of a file (the `nacre.hsm` attribute).
pub(crate) fn state(shared: &Shared, ino: u64) -> Result<Reply, i32> {
    let i = inode(shared, ino)?;
    let h = i.hsm.clone().unwrap_or_default();
    Ok(Reply::Hsm(HsmReply::State(FileHsm {
        state: hsm::state(&i),
        repo: h.repo,
        key: h.key,
        conflict: h.flags & CONFLICT != 0,
    })))
}

pub(crate) fn list(shared: &Shared) -> Result<Reply, i32> {
    let records = shared.mdt.repos().map_err(|_| libc::EIO)?;
    let repos = records
        .into_iter()
        .take(nacre_proto::meta::hsm::LIST_MAX)
        .map(|(id, r)| RepoInfo {
            id,
            dir: r.dir,
            path: r.path,
            url: r.url,
            auto_import: r.auto_import,
            auto_export: r.auto_export,
            interval_secs: r.interval_secs,
            imported: r.imported,
            exported: r.exported,
            error: shared
                .linked(id)
                .map(|l| lock(&l.error).clone())
                .unwrap_or_else(|| "not open (see the MDS log)".into()),
        })
        .collect();
    Ok(Reply::Hsm(HsmReply::List {
        repos,
        tasks: shared.tasks.snapshot(),
    }))
}

/// Writes a file that changed back to its repository, with its POSIX metadata. An
/// object at its key that is not the copy the file came from (changed or made in the
/// repository meanwhile) is a conflict: nothing is overwritten (EEXIST). `auto`: an
/// export the last close started, which the association's policy may not want.
pub(crate) fn export(
    shared: &Arc<Shared>,
    ep: &mut Option<ClientEndpoint>,
    creds: &Creds,
    ino: u64,
    auto: bool,
) -> Result<(), i32> {
    let i = inode(shared, ino)?;
    if !is_owner(creds, &i) && creds.uid != 0 {
        return Err(libc::EPERM);
    }
    if i.kind != FileKind::File {
        return Err(libc::EISDIR);
    }
    let h = i.hsm.clone().ok_or(libc::EINVAL)?;
    let linked = shared.linked(h.repo).ok_or(libc::EIO)?;
    if hsm::is_released(&i) || (h.flags & DIRTY == 0 && h.stored == h.key) {
        return Ok(()); // the repository has it
    }
    if auto {
        let wanted = match h.stored.is_empty() {
            true => policy::NEW,
            false => policy::CHANGED,
        };
        if linked.auto_export & wanted == 0 {
            return Ok(());
        }
    }
    let there = linked.repo.head(&h.key).map_err(|e| {
        linked.note_error(&e);
        errno_of(&e)
    })?;
    if let Some(o) = there {
        if !(h.stored == h.key && o.etag == h.etag) {
            tracing::warn!(
                "export of inode {ino}: {} changed in the repository; nothing overwritten",
                h.key
            );
            let _ = shared.admin(HsmAdmin::Conflict { ino });
            return Err(libc::EEXIST);
        }
    }
    let map = shared.map().ok_or(libc::EAGAIN)?;
    let layout = i.file_layout().ok_or(libc::EIO)?;
    let task = shared.tasks.start("export", h.key.clone(), i.size);
    let meta = PosixMeta {
        mode: Some(i.mode | libc::S_IFREG),
        uid: Some(i.uid),
        gid: Some(i.gid),
        mtime_ns: Some(i.mtime),
    };
    let fill = |at: u64, buf: &mut [u8]| -> std::io::Result<()> {
        let endpoint = transfer::endpoint(&shared.reach, ep).map_err(std::io::Error::other)?;
        let r = transfer::read(endpoint, &map, &layout, at, buf).map_err(std::io::Error::other);
        if r.is_ok() {
            task.add(buf.len() as u64);
        }
        r
    };
    let written = linked.repo.write(&h.key, i.size, fill, &meta);
    let object = match written {
        Ok(o) => o,
        Err(e) => {
            *ep = None;
            linked.note_error(&e);
            task.finish(Some(e.to_string()));
            return Err(errno_of(&e));
        }
    };
    let marked = shared.admin(HsmAdmin::Exported {
        ino,
        version: h.version,
        key: h.key.clone(),
        etag: object.etag,
    });
    task.finish(
        marked
            .as_ref()
            .err()
            .map(|e| format!("changed while exported (errno {e})")),
    );
    marked?;
    // Renamed since its last export: the old object goes if deletions propagate.
    if !h.stored.is_empty() && h.stored != h.key && linked.auto_export & policy::DELETED != 0 {
        super::delete_copy(&linked, &h.stored, &h.etag);
    }
    Ok(())
}

/// Frees the objects of a file whose repository copy is current: checked against the
/// repository first, so a copy changed or deleted there is never the only one left.
fn release(shared: &Arc<Shared>, creds: &Creds, ino: u64) -> Result<(), i32> {
    let i = inode(shared, ino)?;
    if !is_owner(creds, &i) && creds.uid != 0 {
        return Err(libc::EPERM);
    }
    let h = i.hsm.clone().ok_or(libc::EINVAL)?;
    if hsm::is_released(&i) {
        return Ok(());
    }
    if h.flags & DIRTY != 0 || h.stored.is_empty() {
        return Err(libc::EBUSY); // not exported
    }
    let linked = shared.linked(h.repo).ok_or(libc::EIO)?;
    match linked.repo.head(&h.stored) {
        Ok(Some(o)) if o.etag == h.etag && o.size == i.size => {}
        Ok(_) => return Err(libc::ESTALE),
        Err(e) => {
            linked.note_error(&e);
            return Err(errno_of(&e));
        }
    }
    shared.admin(HsmAdmin::Release { ino }).map(drop)
}
