//! The MDT's side of the consistency checker (`nacre check`, Lustre's lfsck in
//! miniature): the board through which a client starts a run and follows it, and the
//! scan of one snapshot of the namespace that tells which objects files name, which
//! link counts disagree with the names pointing at them, and each file's size and
//! layout. The checker thread (`mds/src/checker.rs`) lists the OSTs and compares.
//!
//! Online: the scan reads one redb read transaction (a snapshot; writers go on), taken
//! after `Admin::CheckStart` fenced the object id ranges and a checkpoint committed
//! everything before it. Objects at or above an OST's fence mark were created while
//! the check ran and are not judged.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use nacre_proto::layout::FileLayout;
use nacre_proto::meta::{
    errno, CheckCounts, CheckReport, CheckState, Creds, FileKind, Reply, FINDING_MAX,
    READDIR_MAX_BYTES,
};
use redb::{ReadTransaction, ReadableTable};

use super::alloc::IdSpace;
use super::inode::{Inode, ORPHAN};
use super::ns::ROOT_INO;
use super::store::{decode_dentry, StoreError, DENTRIES, DESTROY, INODES, META};

/// Findings a run keeps to show; more are counted only.
const MAX_FINDINGS: usize = 10_000;

/// What a run should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckOptions {
    /// Repair what is found.
    pub fix: bool,
    /// Orphan objects are linked under `/lost+found` instead of destroyed.
    pub keep_orphans: bool,
}

/// The kinds of finding, counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    Orphan,
    Dangling,
    Nlink,
    Size,
}

/// Where the object id ranges were fenced when a run began, and the files open then.
#[derive(Debug, Clone, Default)]
pub struct Fence {
    pub marks: HashMap<u32, u64>,
    pub open: HashSet<u64>,
}

#[derive(Debug, Default)]
struct Board {
    report: CheckReport,
    findings: Vec<Vec<u8>>,
    requested: Option<CheckOptions>,
    fence: Option<Fence>,
    open_now: Option<HashSet<u64>>,
}

/// Shared by the request path (start, follow), the committer (fences) and the checker
/// thread (findings).
#[derive(Debug, Default)]
pub struct CheckBoard {
    board: Mutex<Board>,
}

impl CheckBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers MDS_CHECK: root only. `start` begins a run unless one is running; the
    /// reply is the current (or last) run with its findings from `from` on.
    pub fn answer(
        &self,
        creds: &Creds,
        start: bool,
        opts: CheckOptions,
        from: u32,
    ) -> Result<Reply, i32> {
        if creds.uid != 0 {
            return Err(errno::EPERM);
        }
        let mut b = self.lock();
        if start && b.report.state != CheckState::Running {
            b.report = CheckReport {
                run: b.report.run + 1,
                state: CheckState::Running,
                ..CheckReport::default()
            };
            b.findings.clear();
            b.requested = Some(opts);
        }
        let mut report = b.report.clone();
        report.findings = b.findings.iter().skip(from as usize).cloned().collect();
        let mut reply = Reply::Check(report);
        reply.trim_to(READDIR_MAX_BYTES);
        Ok(reply)
    }

    /// A run a client asked for, once: (run number, options).
    pub fn take_request(&self) -> Option<(u64, CheckOptions)> {
        let mut b = self.lock();
        let opts = b.requested.take()?;
        Some((b.report.run, opts))
    }

    pub fn found(&self, kind: Finding, line: String) {
        tracing::info!("check: {line}");
        let mut b = self.lock();
        let c = &mut b.report.counts;
        match kind {
            Finding::Orphan => c.orphans += 1,
            Finding::Dangling => c.dangling += 1,
            Finding::Nlink => c.nlink += 1,
            Finding::Size => c.size += 1,
        }
        b.note(line);
    }

    /// A line that is not a finding (what was fixed, what could not be).
    pub fn note(&self, line: String) {
        self.lock().note(line);
    }

    pub fn fixed(&self) {
        self.lock().report.counts.fixed += 1;
    }

    pub fn counts(&self) -> CheckCounts {
        self.lock().report.counts
    }

    /// The run is over: done, or stopped by `Err(why)`.
    pub fn finish(&self, outcome: Result<(), String>) {
        let mut b = self.lock();
        b.report.state = match outcome {
            Ok(()) => CheckState::Done,
            Err(why) => {
                b.note(format!("check stopped: {why}"));
                CheckState::Failed
            }
        };
    }

    pub(super) fn set_fence(&self, fence: Fence) {
        self.lock().fence = Some(fence);
    }

    pub fn take_fence(&self) -> Option<Fence> {
        self.lock().fence.take()
    }

    pub(super) fn set_open_now(&self, open: HashSet<u64>) {
        self.lock().open_now = Some(open);
    }

    pub fn take_open_now(&self) -> Option<HashSet<u64>> {
        self.lock().open_now.take()
    }
}

impl Board {
    fn note(&mut self, mut line: String) {
        self.report.total = self.report.total.saturating_add(1);
        if self.findings.len() < MAX_FINDINGS {
            line.truncate(FINDING_MAX);
            self.findings.push(line.into_bytes());
        }
    }
}

/// A regular file as the snapshot has it.
#[derive(Debug, Clone)]
pub struct ScannedFile {
    pub ino: u64,
    pub size: u64,
    pub layout: FileLayout,
}

/// An inode whose link count disagrees with the names pointing at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkMismatch {
    pub ino: u64,
    pub kind: FileKind,
    pub stored: u32,
    /// What the names say: for a directory 2 + its subdirectories, else its names.
    pub counted: u32,
    /// No name points at it (not the root, not an orphan kept for its opens).
    pub unnamed: bool,
}

/// What one snapshot of the namespace says.
#[derive(Debug, Default)]
pub struct Scan {
    pub files: Vec<ScannedFile>,
    /// (OST, object) -> the file naming it (an index in `files`), or `None` for the
    /// objects of a destroyed file waiting for the destroyer.
    pub named: HashMap<(u32, u64), Option<usize>>,
    pub links: Vec<LinkMismatch>,
    /// Each OST's high-water mark in the snapshot: no object id at or above it was ever
    /// handed out.
    pub hwm: HashMap<u32, u64>,
    pub inodes: u64,
}

/// Scans the snapshot `tx`: every inode, every name and every pending destroy. Memory:
/// a map entry per object named and per inode (tens of bytes each).
pub fn scan(tx: &ReadTransaction) -> Result<Scan, StoreError> {
    let mut scan = Scan::default();
    // Names per inode, and subdirectories per directory.
    let mut names: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    for row in tx.open_table(DENTRIES)?.iter()? {
        let (k, v) = row?;
        let d = decode_dentry(v.value())?;
        *names.entry(d.ino).or_default() += 1;
        if d.kind == FileKind::Dir {
            *subdirs.entry(k.value().0).or_default() += 1;
        }
    }
    for row in tx.open_table(INODES)?.iter()? {
        let (k, v) = row?;
        let i = Inode::decode(k.value(), v.value())?;
        scan.inodes += 1;
        check_links(&i, &names, &subdirs, &mut scan.links);
        if let Some(layout) = i.file_layout() {
            let at = scan.files.len();
            for o in layout.objects() {
                scan.named.insert((o.ost, o.oid), Some(at));
            }
            scan.files.push(ScannedFile {
                ino: i.ino,
                size: i.size,
                layout,
            });
        }
    }
    for row in tx.open_table(DESTROY)?.iter()? {
        let (_, v) = row?;
        let layout =
            FileLayout::decode(v.value()).map_err(|_| StoreError::CorruptRecord("destroy row"))?;
        for o in layout.objects() {
            scan.named.entry((o.ost, o.oid)).or_insert(None);
        }
    }
    let meta = tx.open_table(META)?;
    for row in meta.range(IdSpace::Ost(0).key().as_str()..)? {
        let (k, v) = row?;
        let Some(ost) = k.value().strip_prefix("hwm.ost.") else {
            break;
        };
        if let Ok(ost) = ost.parse() {
            scan.hwm.insert(ost, v.value());
        }
    }
    Ok(scan)
}

fn check_links(
    i: &Inode,
    names: &HashMap<u64, u32>,
    subdirs: &HashMap<u64, u32>,
    out: &mut Vec<LinkMismatch>,
) {
    let named = names.get(&i.ino).copied().unwrap_or(0);
    let counted = match i.kind {
        FileKind::Dir => 2 + subdirs.get(&i.ino).copied().unwrap_or(0),
        _ => named,
    };
    // Unlinked while open: no name and no link, destroyed at its last close.
    let orphan = i.flags & ORPHAN != 0 && i.nlink == 0 && named == 0;
    let unnamed = named == 0 && i.ino != ROOT_INO && !orphan;
    let wrong = if i.kind == FileKind::Dir {
        i.nlink != counted
    } else {
        !orphan && i.nlink != counted
    };
    if wrong || unnamed {
        out.push(LinkMismatch {
            ino: i.ino,
            kind: i.kind,
            stored: i.nlink,
            counted,
            unnamed,
        });
    }
}
