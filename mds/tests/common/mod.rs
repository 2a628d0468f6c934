//! Helpers shared by the MDT tests: a fresh MDT in the test's target dir and short calls.
#![allow(dead_code)]

use nacre_mds::mdt::{Mdt, MdtConfig, Submitter, SyncMode, ROOT_INO};
use nacre_proto::layout::StripedLayout;
use nacre_proto::meta::{Attr, Creds, Head, Reply, Request};
use std::path::PathBuf;

pub const EPOCH: u64 = 7;

pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("mdt")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn config(dir: &PathBuf, mode: SyncMode) -> MdtConfig {
    let mut cfg = MdtConfig::new(dir);
    cfg.epoch = EPOCH;
    cfg.osts = vec![0, 1, 2, 3];
    cfg.mode = mode;
    cfg
}

pub struct T {
    pub mdt: Mdt,
    pub sub: Submitter,
}

impl T {
    pub fn new(name: &str) -> T {
        T::open(config(&fresh_dir(name), SyncMode::Default))
    }

    pub fn open(cfg: MdtConfig) -> T {
        let mdt = Mdt::open(cfg).expect("open MDT");
        let sub = mdt.submitter();
        T { mdt, sub }
    }

    pub fn call_as(&self, creds: &Creds, req: Request) -> Result<Reply, i32> {
        self.sub.call(
            &Head {
                creds: creds.clone(),
                epoch: EPOCH,
                replay: None,
            },
            req,
        )
    }

    /// Submits a server operation and waits for its answer.
    pub fn admin(&self, op: nacre_mds::mdt::Admin) -> Result<Reply, i32> {
        self.sub.submit_admin(1, op).unwrap();
        self.sub
            .wait_for(1, std::time::Duration::from_secs(10))
            .expect("admin completion")
            .result
    }

    pub fn call(&self, req: Request) -> Result<Reply, i32> {
        self.call_as(&Creds::root(), req)
    }

    pub fn attr_as(&self, creds: &Creds, req: Request) -> Result<Attr, i32> {
        match self.call_as(creds, req)? {
            Reply::Attr(a) => Ok(a),
            Reply::Opened { attr, .. } => Ok(attr),
            other => panic!("expected attributes, got {other:?}"),
        }
    }

    pub fn create_as(
        &self,
        creds: &Creds,
        parent: u64,
        name: &str,
        mode: u32,
    ) -> Result<Attr, i32> {
        self.attr_as(creds, create(parent, name, mode))
    }

    pub fn create(&self, parent: u64, name: &str) -> Attr {
        self.create_as(&Creds::root(), parent, name, 0o644)
            .expect("create")
    }

    pub fn mkdir_as(&self, creds: &Creds, parent: u64, name: &str, mode: u32) -> Result<Attr, i32> {
        self.attr_as(
            creds,
            Request::Mkdir {
                parent,
                name: name.into(),
                mode,
            },
        )
    }

    pub fn mkdir(&self, parent: u64, name: &str) -> Attr {
        self.mkdir_as(&Creds::root(), parent, name, 0o755)
            .expect("mkdir")
    }

    pub fn lookup_as(&self, creds: &Creds, parent: u64, name: &str) -> Result<Attr, i32> {
        self.attr_as(
            creds,
            Request::Lookup {
                parent,
                name: name.into(),
            },
        )
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr, i32> {
        self.lookup_as(&Creds::root(), parent, name)
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, i32> {
        self.attr_as(&Creds::root(), Request::Getattr { ino })
    }

    pub fn layout(&self, ino: u64) -> StripedLayout {
        match self.call(Request::GetLayout { ino }) {
            Ok(Reply::Layout(l)) => l.geometry().clone(),
            other => panic!("expected a layout, got {other:?}"),
        }
    }

    /// Every name in `dir`, paging with `page` entries per call.
    pub fn list(&self, dir: u64, page: u32) -> Vec<String> {
        let mut names = Vec::new();
        let mut cookie = 0;
        loop {
            match self
                .call(Request::Readdir {
                    dir,
                    cookie,
                    max: page,
                })
                .expect("readdir")
            {
                Reply::Dir {
                    entries,
                    next_cookie,
                    eof,
                } => {
                    names.extend(
                        entries
                            .iter()
                            .map(|e| String::from_utf8(e.name.clone()).unwrap()),
                    );
                    cookie = next_cookie;
                    if eof {
                        return names;
                    }
                }
                other => panic!("expected entries, got {other:?}"),
            }
        }
    }
}

pub fn create(parent: u64, name: &str, mode: u32) -> Request {
    Request::Create {
        parent,
        name: name.into(),
        mode,
        flags: 0,
        layout: None,
    }
}

pub const ROOT: u64 = ROOT_INO;
