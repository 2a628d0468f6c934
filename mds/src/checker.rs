//! The consistency checker (`nacre check`, Lustre's lfsck in miniature), run by the MDS
//! on its own thread when a client asks (MDS_CHECK), while the file system serves.
//!
//! A run takes a snapshot of the namespace (`Mdt::check_snapshot`, `mdt::check::scan`),
//! lists every object of every OST in the cluster map (OBJ_LIST, a page at a time) and
//! compares:
//!
//! - **orphans**: objects no file names and no pending destroy will remove, below the
//!   OST's fence mark (objects above it were created while the check ran);
//! - **dangling**: layout entries no OST can serve: an OST the map does not have, or an
//!   object id at or above the OST's high-water mark, which a later create would hand
//!   out again (two files sharing one object);
//! - **nlink**: link counts that disagree with the names (a directory: 2 + its
//!   subdirectories), and inodes no name points at;
//! - **size**: files whose objects hold data past the recorded size (a writer that died
//!   before reporting its size), judged only for files open neither when the run began
//!   nor when the OSTs were listed, and checked again against the live size.
//!
//! With `fix`: orphans are destroyed (or, with `keep_orphans`, linked under
//! `/lost+found`), ids at or above a mark raise the mark, link counts are set, unnamed
//! inodes are linked under `/lost+found`, sizes are raised to what the objects hold.
//! A layout naming an OST the map lacks is reported, not repaired: only an
//! administrator knows whether that OST comes back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nacre_proto::bootstrap::ClusterMap;
use nacre_proto::meta::{Creds, FileKind, Head, Reply, Request};
use nacre_proto::object::{ListedObject, OBJECT_DIRS};
use nacre_rpc::objects::OstRoute;
use nacre_rpc::ClientEndpoint;

use crate::destroyer::{destroy_object, rpc_config};
use crate::mds_serve::ost_indices;
use crate::mdt::check::{CheckBoard, CheckOptions, Finding, Scan};
use crate::mdt::{Admin, Mdt, Repair, Submitter};

/// One OSS request, and one repair, may take this long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the thread looks for a run to start.
const POLL: Duration = Duration::from_millis(50);

/// The thread that runs checks when clients ask; stops when dropped.
pub struct Checker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    map: Mutex<Option<ClusterMap>>,
}

impl Checker {
    /// Serves `mdt`'s check board; talks to the OSSs over the fabric `sel` names.
    pub fn start(mdt: Arc<Mdt>, sel: crate::reach::Reach) -> std::io::Result<Checker> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            map: Mutex::new(None),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("mds-checker".into())
                .spawn(move || run(&mdt, &sel, &shared))?
        };
        Ok(Checker {
            shared,
            thread: Some(thread),
        })
    }

    /// The cluster map to find the OSTs in (the newest the server fetched).
    pub fn set_map(&self, map: ClusterMap) {
        *self.shared.map.lock().unwrap_or_else(|p| p.into_inner()) = Some(map);
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mdt: &Mdt, sel: &crate::reach::Reach, shared: &Shared) {
    let board = mdt.check_board().clone();
    while !shared.stop.load(Ordering::SeqCst) {
        let Some((run, opts)) = board.take_request() else {
            std::thread::sleep(POLL);
            continue;
        };
        let map = shared.map.lock().unwrap_or_else(|p| p.into_inner()).clone();
        tracing::info!(run, ?opts, "consistency check started");
        let outcome = match map {
            Some(map) => {
                let mut c = Check {
                    mdt,
                    board: &board,
                    sub: mdt.submitter(),
                    tags: AtomicU64::new(1),
                    opts,
                    stop: &shared.stop,
                };
                c.run(sel, &map)
            }
            None => Err("no cluster map yet".to_string()),
        };
        let counts = board.counts();
        tracing::info!(run, ?counts, ok = outcome.is_ok(), "consistency check over");
        board.finish(outcome);
    }
}

/// One run.
struct Check<'a> {
    mdt: &'a Mdt,
    board: &'a CheckBoard,
    /// Used by this run alone, one call at a time.
    sub: Submitter,
    tags: AtomicU64,
    opts: CheckOptions,
    stop: &'a AtomicBool,
}

/// What the OSTs hold: the size of every object a file names, and the orphans.
#[derive(Default)]
struct Listing {
    sizes: HashMap<(u32, u64), u64>,
    orphans: Vec<(u32, ListedObject)>,
}

impl Check<'_> {
    fn run(&mut self, sel: &crate::reach::Reach, map: &ClusterMap) -> Result<(), String> {
        let tx = self.mdt.check_snapshot().map_err(|e| e.to_string())?;
        let fence = self.board.take_fence().unwrap_or_default();
        let scan = crate::mdt::check::scan(&tx).map_err(|e| e.to_string())?;
        drop(tx);
        let mut ep = sel
            .open(rpc_config(TIMEOUT))
            .map_err(|e| format!("opening an endpoint: {e}"))?;
        let osts = ost_indices(map);
        let mut listing = Listing::default();
        for &ost in &osts {
            // Objects at or above the mark were handed out after the scan's snapshot
            // began; without a mark no id was handed out on the OST before it.
            let mark = fence
                .marks
                .get(&ost)
                .or(scan.hwm.get(&ost))
                .copied()
                .unwrap_or(0);
            self.list_ost(&mut ep, map, ost, mark, &scan, &mut listing)?;
        }
        self.call_admin(Admin::CheckOpens)?;
        let mut open = fence.open;
        open.extend(self.board.take_open_now().unwrap_or_default());
        self.orphans(&mut ep, map, &listing.orphans);
        self.dangling(&scan, &osts);
        self.links(&scan);
        self.sizes(&scan, &listing.sizes, &open);
        Ok(())
    }

    /// Walks the 256 object directories of `ost`.
    fn list_ost(
        &self,
        ep: &mut ClientEndpoint,
        map: &ClusterMap,
        ost: u32,
        mark: u64,
        scan: &Scan,
        out: &mut Listing,
    ) -> Result<(), String> {
        let route = OstRoute::in_map(map, ost).map_err(|e| e.to_string())?;
        for dir in 0..OBJECT_DIRS {
            let mut after = 0;
            loop {
                if self.stop.load(Ordering::SeqCst) {
                    return Err("the server is stopping".into());
                }
                let page = ep
                    .obj_list(&route, dir, after)
                    .map_err(|e| format!("listing OST {ost}: {e}"))?;
                for o in &page.objects {
                    after = o.oid;
                    if scan.named.contains_key(&(ost, o.oid)) {
                        out.sizes.insert((ost, o.oid), o.size);
                    } else if o.oid < mark {
                        out.orphans.push((ost, *o));
                    }
                }
                if page.eof || page.objects.is_empty() {
                    break;
                }
            }
        }
        Ok(())
    }

    fn orphans(&self, ep: &mut ClientEndpoint, map: &ClusterMap, orphans: &[(u32, ListedObject)]) {
        for &(ost, o) in orphans {
            self.board.found(
                Finding::Orphan,
                format!(
                    "orphan: object {:#x} on OST {ost} ({} bytes) belongs to no file",
                    o.oid, o.size
                ),
            );
            if !self.opts.fix {
                continue;
            }
            let done = match self.opts.keep_orphans {
                true => self.repair(Repair::AdoptObject {
                    ost,
                    oid: o.oid,
                    size: o.size,
                }),
                false => destroy_object(ep, map, ost, o.oid)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            self.fixed(done, || match self.opts.keep_orphans {
                true => format!("fixed: linked as /lost+found/ost{ost}-{:016x}", o.oid),
                false => format!("fixed: object {:#x} on OST {ost} destroyed", o.oid),
            });
        }
    }

    fn dangling(&self, scan: &Scan, osts: &[u32]) {
        let known: HashSet<u32> = osts.iter().copied().collect();
        for f in &scan.files {
            let stripes = f
                .layout
                .mirrors
                .iter()
                .flat_map(|m| m.stripes.objects.iter());
            for (stripe, o) in stripes.enumerate() {
                if !known.contains(&o.ost) {
                    self.board.found(
                        Finding::Dangling,
                        format!(
                            "dangling: inode {} stripe {stripe} is on OST {}, which the \
                             cluster map does not have (not repaired)",
                            f.ino, o.ost
                        ),
                    );
                    continue;
                }
                let hwm = scan.hwm.get(&o.ost).copied().unwrap_or(0);
                if o.oid == 0 || o.oid >= hwm {
                    self.board.found(
                        Finding::Dangling,
                        format!(
                            "dangling: inode {} stripe {stripe} names object {:#x} on OST {}, \
                             at or above the OST's id mark {hwm:#x}",
                            f.ino, o.oid, o.ost
                        ),
                    );
                    if self.opts.fix && o.oid != 0 {
                        let r = self.repair(Repair::RaiseMark {
                            ost: o.ost,
                            oid: o.oid,
                        });
                        self.fixed(r, || format!("fixed: OST {} id mark raised", o.ost));
                    }
                }
            }
        }
    }

    fn links(&self, scan: &Scan) {
        for m in &scan.links {
            let what = m.kind.name();
            let line = match m.unnamed {
                true => format!(
                    "nlink: {what} inode {} has link count {} and no name",
                    m.ino, m.stored
                ),
                false => format!(
                    "nlink: {what} inode {} has link count {}, its names say {}",
                    m.ino, m.stored, m.counted
                ),
            };
            self.board.found(Finding::Nlink, line);
            if !self.opts.fix {
                continue;
            }
            let (r, done) = match m.unnamed {
                true => {
                    let nlink = if m.kind == FileKind::Dir {
                        m.counted
                    } else {
                        1
                    };
                    (
                        self.repair(Repair::Adopt { ino: m.ino, nlink }),
                        format!("fixed: linked as /lost+found/#{}", m.ino),
                    )
                }
                false => (
                    self.repair(Repair::SetLinks {
                        ino: m.ino,
                        from: m.stored,
                        to: m.counted,
                    }),
                    format!("fixed: inode {} link count set to {}", m.ino, m.counted),
                ),
            };
            self.fixed(r, || done);
        }
    }

    fn sizes(&self, scan: &Scan, sizes: &HashMap<(u32, u64), u64>, open: &HashSet<u64>) {
        for f in scan.files.iter().filter(|f| !open.contains(&f.ino)) {
            // A stale mirror may hold less than the file, never more than a mirror in
            // sync: every mirror counts.
            let held = f
                .layout
                .mirrors
                .iter()
                .flat_map(|m| m.stripes.objects.iter().enumerate())
                .filter_map(|(k, o)| {
                    let size = *sizes.get(&(o.ost, o.oid))?;
                    let g = f.layout.geometry();
                    (size > 0).then(|| g.file_size_from_object(k as u32, size))
                })
                .max()
                .unwrap_or(0);
            if held <= f.size {
                continue;
            }
            // The snapshot may be behind: a report since then settles it.
            let live = self.live_size(f.ino);
            if live.is_none_or(|s| s >= held) {
                continue;
            }
            self.board.found(
                Finding::Size,
                format!(
                    "size: file inode {} has size {}, its objects hold data up to {held}",
                    f.ino,
                    live.unwrap_or(f.size)
                ),
            );
            if self.opts.fix {
                let r = self.call(Request::ReportSize {
                    ino: f.ino,
                    size: held,
                });
                self.fixed(r, || format!("fixed: inode {} size set to {held}", f.ino));
            }
        }
    }

    fn live_size(&self, ino: u64) -> Option<u64> {
        match self.mdt.read(&self.head(), &Request::Getattr { ino }) {
            Ok(Reply::Attr(a)) => Some(a.size),
            _ => None,
        }
    }

    fn head(&self) -> Head {
        Head {
            creds: Creds::root(),
            epoch: self.mdt.epoch(),
            replay: None,
        }
    }

    /// Counts a repair, or notes why it failed.
    fn fixed(&self, r: Result<(), String>, what: impl FnOnce() -> String) {
        match r {
            Ok(()) => {
                self.board.fixed();
                self.board.note(what());
            }
            Err(e) => self.board.note(format!("not fixed: {e}")),
        }
    }

    fn repair(&self, r: Repair) -> Result<(), String> {
        self.call_admin(Admin::Repair(r))
    }

    fn call(&self, req: Request) -> Result<(), String> {
        let tag = self.tags.fetch_add(1, Ordering::Relaxed);
        self.sub
            .submit(tag, self.head(), req)
            .map_err(|e| e.to_string())?;
        self.wait(tag)
    }

    fn call_admin(&self, op: Admin) -> Result<(), String> {
        let tag = self.tags.fetch_add(1, Ordering::Relaxed);
        self.sub.submit_admin(tag, op).map_err(|e| e.to_string())?;
        self.wait(tag)
    }

    fn wait(&self, tag: u64) -> Result<(), String> {
        match self.sub.wait_for(tag, TIMEOUT) {
            Some(c) => c.result.map(|_| ()).map_err(|e| format!("errno {e}")),
            None => Err(format!("the MDT did not answer in {TIMEOUT:?}")),
        }
    }
}
