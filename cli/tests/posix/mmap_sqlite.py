#!/usr/bin/env python3
"""Shared mmap and SQLite in WAL mode on a mount: mmap_sqlite.py HERE THERE, two mounts
of one file system. Prints `ok` when every check holds; an assertion names the first
that does not."""

import mmap
import os
import sqlite3
import sys

here, there = sys.argv[1], sys.argv[2]
path = os.path.join(here, "mapped")
with open(path, "wb") as f:
    f.write(b"a" * 3 * 4096)
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, 3 * 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
# A store through the mapping shows to read(2) through the same mount at once...
m[0:5] = b"hello"
reader = os.open(path, os.O_RDONLY)
assert os.pread(reader, 5, 0) == b"hello", "a store not seen by read"
# ...a write(2) shows in the mapping...
os.pwrite(fd, b"WORLD", 5000)
assert m[5000:5005] == b"WORLD", "a write not seen in the mapping"
# ...and a private mapping keeps its own copy.
p = mmap.mmap(reader, 4096, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
p[0:5] = b"xxxxx"
assert m[0:5] == b"hello" and os.pread(reader, 5, 0) == b"hello", "a private store leaked"
p.close()
# After msync and close, another mount reads what the mapping wrote.
m[8192:8197] = b"synced"[:5]
m.flush()
m.close()
os.close(fd)
os.close(reader)
with open(os.path.join(there, "mapped"), "rb") as f:
    data = f.read()
assert (data[0:5], data[5000:5005], data[8192:8197], len(data)) == (
    b"hello", b"WORLD", b"synce", 3 * 4096,
), "the other mount read something else"

# SQLite in WAL mode: a writer, a second connection reading, then the other mount.
db = os.path.join(here, "wal.db")
w = sqlite3.connect(db)
assert w.execute("pragma journal_mode=wal").fetchone() == ("wal",)
w.execute("create table t(x integer)")
with w:
    w.executemany("insert into t values (?)", [(i,) for i in range(2000)])
r = sqlite3.connect(db)
assert r.execute("select count(*), sum(x) from t").fetchone() == (2000, 1999000)
with w:
    w.execute("delete from t where x % 2 = 0")
assert r.execute("select count(*) from t").fetchone() == (1000,)
assert w.execute("pragma integrity_check").fetchone() == ("ok",)
w.execute("pragma wal_checkpoint(truncate)")
r.close()
w.close()
other = sqlite3.connect(os.path.join(there, "wal.db"))
assert other.execute("select count(*) from t").fetchone() == (1000,)
other.close()
print("ok")
