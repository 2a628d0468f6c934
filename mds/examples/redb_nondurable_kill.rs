//! The experiment behind the MDT's operation log: does a redb commit made with
//! `Durability::None` survive kill -9 of the process? (It does not: on reopen redb is
//! back at its last durable commit.)
//!
//! `cargo run --release -p nacre-mds --example redb_nondurable_kill`

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const T: TableDefinition<u64, u64> = TableDefinition::new("t");

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/redb-experiment");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("x.redb");
    if std::env::args().nth(1).as_deref() == Some("child") {
        // Commit keys 1, 2, ...; every 1000th commit durable; print each after its commit.
        let db = Database::create(&path).unwrap();
        let mut out = std::io::stdout();
        for i in 1u64.. {
            let mut tx = db.begin_write().unwrap();
            let d = if i % 1000 == 0 {
                Durability::Immediate
            } else {
                Durability::None
            };
            tx.set_durability(d).unwrap();
            tx.open_table(T).unwrap().insert(i, i).unwrap();
            tx.commit().unwrap();
            writeln!(out, "{i}").unwrap();
            out.flush().unwrap();
        }
        return;
    }
    let _ = std::fs::remove_file(&path);
    let me = std::env::current_exe().unwrap();
    let mut child = Command::new(me)
        .arg("child")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last = 0u64;
    while last < 2500 {
        last = lines.next().unwrap().unwrap().trim().parse().unwrap();
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let db = Database::create(&path).unwrap();
    let rx = db.begin_read().unwrap();
    let t = rx.open_table(T).unwrap();
    let max = t.last().unwrap().map_or(0, |(k, _)| k.value());
    println!(
        "committed (acknowledged) at least {last}; after kill -9 and reopen: {} keys, max {max}",
        t.len().unwrap()
    );
    println!("non-durable commits survive kill -9: {}", max >= last);
}
