//! The movers' queue (loads a reader waits for go first) and the task list that
//! `nacre repo status` and `nacre repo list` show.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nacre_proto::meta::hsm::{TaskInfo, LIST_MAX};

use super::lock;
use super::restore::Load;
use crate::mdt::HsmJob;

pub(crate) enum Work {
    /// Load chunk N of a file.
    Chunk(Arc<Load>, u32),
    /// Link, unlink, export, release.
    Request(HsmJob),
    /// An import pass of an association.
    Import(u32),
    /// The export a dirty file's last close asks for (if the policy wants it).
    AutoExport(u64),
    /// A repository copy whose file is gone (deletions propagate): association, key,
    /// the copy's tag.
    Delete(u32, String, String),
}

#[derive(Default)]
pub(crate) struct WorkQueue {
    q: Mutex<VecDeque<Work>>,
    cv: Condvar,
}

impl WorkQueue {
    /// Work a reader waits for.
    pub fn push_front(&self, w: Work) {
        lock(&self.q).push_front(w);
        self.cv.notify_one();
    }

    pub fn push_back(&self, w: Work) {
        lock(&self.q).push_back(w);
        self.cv.notify_one();
    }

    /// The next work, or None once `stop` is set.
    pub fn pop(&self, stop: &AtomicBool) -> Option<Work> {
        let mut q = lock(&self.q);
        loop {
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(w) = q.pop_front() {
                return Some(w);
            }
            q = self
                .cv
                .wait_timeout(q, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn wake_all(&self) {
        self.cv.notify_all();
    }
}

/// The tasks running and the last ones finished (at most [`LIST_MAX`]).
#[derive(Default)]
pub(crate) struct Tasks {
    list: Mutex<VecDeque<Arc<Mutex<TaskInfo>>>>,
}

/// One task's entry in the list.
#[derive(Clone)]
pub(crate) struct Task(Arc<Mutex<TaskInfo>>);

impl Tasks {
    pub fn start(&self, kind: &str, what: String, total: u64) -> Task {
        let t = Arc::new(Mutex::new(TaskInfo {
            kind: kind.into(),
            what,
            done: 0,
            total,
            finished: false,
            error: String::new(),
        }));
        let mut list = lock(&self.list);
        if list.len() >= LIST_MAX {
            // Forget the oldest finished task (or, if all run, the oldest).
            let at = list.iter().position(|t| lock(t).finished).unwrap_or(0);
            list.remove(at);
        }
        list.push_back(t.clone());
        Task(t)
    }

    pub fn snapshot(&self) -> Vec<TaskInfo> {
        lock(&self.list).iter().map(|t| lock(t).clone()).collect()
    }
}

impl Task {
    pub fn add(&self, n: u64) {
        lock(&self.0).done += n;
    }

    pub fn finish(&self, error: Option<String>) {
        let mut t = lock(&self.0);
        t.finished = true;
        t.error = error.unwrap_or_default();
    }
}
