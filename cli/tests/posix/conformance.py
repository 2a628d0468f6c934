#!/usr/bin/env python3
"""POSIX conformance cases, run on a directory of any file system.

Usage (as root): conformance.py DIR

For each of two callers (root, and uid/gid 1000 without supplementary groups) and each
family of cases, DIR gets a fresh fixture made by root (files and directories owned by
1000, by 2000 and by root, setuid/setgid files, a sticky directory, symlinks), then a
child process that runs as the caller applies the family's cases in order. One line per
case: `caller family case: result`, the result being the errno name or `ok`, then the
state of the paths the case touched (type, mode, owner, links, size of regular files,
device number of device nodes; never times or inode numbers). Run on two file systems,
the outputs must be the same (cli/tests/posix.rs compares nacre's mount with ext4).
"""

import errno
import os
import shutil
import stat
import sys

USER = 1000  # the unprivileged caller, and the owner of "own" things
OTHER = 2000  # another user: the owner of "other" things


def err_name(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def describe(path):
    """The state of one path, as both file systems must show it."""
    try:
        st = os.lstat(path)
    except OSError as e:
        return "absent" if e.errno == errno.ENOENT else err_name(e)
    kind = {
        stat.S_IFREG: "file",
        stat.S_IFDIR: "dir",
        stat.S_IFLNK: "link",
        stat.S_IFIFO: "fifo",
        stat.S_IFSOCK: "sock",
        stat.S_IFCHR: "chr",
        stat.S_IFBLK: "blk",
    }.get(stat.S_IFMT(st.st_mode), "?")
    out = f"{kind} {stat.S_IMODE(st.st_mode):04o} {st.st_uid}:{st.st_gid} n{st.st_nlink}"
    if kind == "file":
        out += f" s{st.st_size}"
    if kind in ("chr", "blk"):
        out += f" dev{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
    return out


def make(path, mode, uid, gid=None, data=b""):
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, uid, uid if gid is None else gid)
    os.chmod(path, mode)


def make_dir(path, mode, uid, files=()):
    os.mkdir(path)
    for name, fmode, fuid in files:
        make(os.path.join(path, name), fmode, fuid)
    os.chown(path, uid, uid)
    os.chmod(path, mode)


def fixture(base):
    """The tree every family starts from (made by root)."""
    if os.path.lexists(base):
        shutil.rmtree(base)
    os.mkdir(base)
    os.chmod(base, 0o755)
    j = lambda n: os.path.join(base, n)
    make(j("own"), 0o644, USER, data=b"0123456789")
    make(j("own_g"), 0o644, USER, gid=OTHER)
    make(j("other"), 0o644, OTHER, data=b"abc")
    make(j("ro_own"), 0o444, USER)
    make(j("none_other"), 0o000, OTHER)
    make(j("rw_world"), 0o666, OTHER, data=b"xyz")
    make(j("suid_own"), 0o6755, USER, data=b"#!/bin/sh\n")
    make(j("suid_other_w"), 0o6777, OTHER, data=b"#!/bin/sh\n")
    make(j("sgid_nox"), 0o2644, USER, data=b"data")
    make_dir(j("d_own"), 0o755, USER, [("f", 0o644, USER)])
    os.mkdir(j("d_own/s"))
    os.chown(j("d_own/s"), USER, USER)
    make_dir(j("d_other"), 0o755, OTHER, [("f", 0o644, OTHER)])
    make_dir(j("d_open"), 0o777, OTHER, [("f", 0o666, OTHER), ("f_u", 0o644, USER)])
    make_dir(j("d_sticky"), 0o1777, 0, [("f_other", 0o666, OTHER), ("f_u", 0o644, USER)])
    os.mkdir(j("d_sticky/s_other"))
    os.chown(j("d_sticky/s_other"), OTHER, OTHER)
    os.chmod(j("d_sticky/s_other"), 0o777)
    make_dir(j("d_nox"), 0o766, OTHER, [("f", 0o666, OTHER)])
    make_dir(j("d_ro"), 0o555, OTHER, [("f", 0o666, OTHER)])
    make_dir(j("d_empty"), 0o777, OTHER)
    make_dir(j("d_full"), 0o777, OTHER, [("f", 0o666, OTHER)])
    make_dir(j("d_sgid"), 0o2777, OTHER)
    os.symlink("own", j("l_own"))
    os.symlink("nowhere", j("l_dangling"))
    os.symlink("d_own", j("l_dir"))
    os.lchown(j("l_own"), USER, USER)


# --- the families: each a list of (name, action, paths to describe after) ------------

OPEN_TARGETS = [
    "own", "other", "ro_own", "none_other", "rw_world", "d_own", "l_own",
    "l_dangling", "missing", "own/x", "d_nox/f", "d_ro/f",
]
OPEN_FLAGS = [
    ("rdonly", os.O_RDONLY),
    ("wronly", os.O_WRONLY),
    ("rdwr", os.O_RDWR),
    ("trunc", os.O_WRONLY | os.O_TRUNC),
    ("directory", os.O_RDONLY | os.O_DIRECTORY),
    ("creat_excl", os.O_WRONLY | os.O_CREAT | os.O_EXCL),
    ("creat", os.O_WRONLY | os.O_CREAT),
    ("nofollow", os.O_RDONLY | os.O_NOFOLLOW),
]


def do_open(path, flags):
    fd = os.open(path, flags, 0o640)
    os.close(fd)


def family_open():
    for t in OPEN_TARGETS:
        for fname, flags in OPEN_FLAGS:
            yield f"{fname}({t})", (lambda t=t, f=flags: do_open(t, f)), [t]


NEW_IN = ["d_own", "d_other", "d_open", "d_sticky", "d_nox", "d_ro", "own", "missing_dir", "d_sgid"]


def family_create():
    for d in NEW_IN:
        n = f"{d}/new"
        yield f"creat({d})", (lambda n=n: do_open(n, os.O_WRONLY | os.O_CREAT)), [n]
        m = f"{d}/newdir"
        yield f"mkdir({d})", (lambda m=m: os.mkdir(m, 0o775)), [m]
        p = f"{d}/fifo"
        yield f"mkfifo({d})", (lambda p=p: os.mkfifo(p, 0o640)), [p]
        s = f"{d}/sym"
        yield f"symlink({d})", (lambda s=s: os.symlink("own", s)), [s]
        h = f"{d}/hard"
        yield f"link({d})", (lambda h=h: os.link("rw_world", h)), [h, "rw_world"]
        yield f"mkdir_existing({d})", (lambda d=d: os.mkdir(f"{d}/f")), [f"{d}/f"]
        yield f"creat_excl_existing({d})", (
            lambda d=d: do_open(f"{d}/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        ), [f"{d}/f"]
    yield "mkdir(exists_as_link)", (lambda: os.mkdir("l_dangling")), ["l_dangling"]
    yield "symlink(existing)", (lambda: os.symlink("x", "own")), ["own"]
    yield "link(dir)", (lambda: os.link("d_own", "d_link")), ["d_link"]
    yield "link(missing)", (lambda: os.link("missing", "m_link")), ["m_link"]
    yield "link(onto_existing)", (lambda: os.link("own", "other")), ["own", "other"]
    yield "link(own)", (lambda: os.link("own", "own_link")), ["own", "own_link"]
    yield "link(other_ro)", (lambda: os.link("other", "other_link")), ["other", "other_link"]


REMOVE_TARGETS = [
    "d_own/f", "d_other/f", "d_open/f", "d_open/f_u", "d_sticky/f_other", "d_sticky/f_u",
    "d_sticky/s_other", "d_nox/f", "d_ro/f", "d_empty", "d_full", "own", "d_own",
    "missing", "l_own", "l_dir", "d_own/s", "d_own/.",
]


def family_remove():
    for t in REMOVE_TARGETS:
        yield f"unlink({t})", (lambda t=t: os.unlink(t)), [t]
        yield f"rmdir({t})", (lambda t=t: os.rmdir(t)), [t]


RENAMES = [
    ("d_own/f", "d_own/g"), ("d_other/f", "d_own/g"), ("d_open/f", "d_open/g"),
    ("d_open/f_u", "d_open/g"), ("d_sticky/f_other", "d_sticky/g"),
    ("d_sticky/f_u", "d_sticky/g"), ("d_sticky/f_u", "d_sticky/f_other"),
    ("d_sticky/s_other", "d_sticky/s2"), ("own", "d_own/s"), ("d_own/s", "own"),
    ("d_empty", "d_empty/x"), ("d_own/s", "d_full"), ("d_own/s", "d_empty"),
    ("missing", "x"), ("own", "own"), ("d_ro/f", "d_ro/g"), ("d_nox/f", "g"),
    ("l_own", "l2"), ("own", "other"), ("d_own", "d_own2"), ("d_own/f", "d_ro/f"),
    ("own", "d_own/."), ("rw_world", "l_own"), ("d_own/s", "d_other/s"),
]


def family_rename():
    for a, b in RENAMES:
        yield f"rename({a},{b})", (lambda a=a, b=b: os.rename(a, b)), [a, b]


MODE_TARGETS = ["own", "own_g", "other", "d_own", "d_sticky", "rw_world"]
MODES = [0o600, 0o4755, 0o2755, 0o1777]


def family_chmod():
    for t in MODE_TARGETS:
        for m in MODES:
            yield f"chmod({t},{m:o})", (lambda t=t, m=m: os.chmod(t, m)), [t]


OWNERS = [(USER, -1), (OTHER, -1), (-1, USER), (-1, OTHER), (-1, 0), (0, 0), (-1, -1)]


def family_chown():
    for t in ["own", "other", "own_g", "suid_own", "d_own"]:
        for u, g in OWNERS:
            yield f"chown({t},{u},{g})", (lambda t=t, u=u, g=g: os.chown(t, u, g)), [t]
    yield "lchown(l_own)", (lambda: os.chown("l_own", -1, USER, follow_symlinks=False)), ["l_own", "own"]


TRUNC_TARGETS = [
    "own", "other", "ro_own", "rw_world", "suid_own", "suid_other_w", "sgid_nox",
    "d_own", "missing", "l_own",
]


def family_truncate():
    for t in TRUNC_TARGETS:
        for size in (0, 100):
            yield f"truncate({t},{size})", (lambda t=t, s=size: os.truncate(t, s)), [t]


def write_to(path):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, b"hello")
    finally:
        os.close(fd)


def family_write():
    for t in ["suid_own", "suid_other_w", "sgid_nox", "rw_world", "own"]:
        yield f"write({t})", (lambda t=t: write_to(t)), [t]


def family_utime():
    for t in ["own", "other", "rw_world", "ro_own", "none_other"]:
        yield f"utime_now({t})", (lambda t=t: os.utime(t)), [t]
        yield f"utime_set({t})", (lambda t=t: os.utime(t, ns=(10**9, 2 * 10**9))), [t]


def family_mknod():
    nodes = [
        ("fifo", stat.S_IFIFO | 0o644, 0),
        ("chr", stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        ("blk", stat.S_IFBLK | 0o600, os.makedev(8, 1)),
        ("sock", stat.S_IFSOCK | 0o755, 0),
        ("reg", stat.S_IFREG | 0o640, 0),
    ]
    for d in ["d_own", "d_open", "d_other"]:
        for name, mode, dev in nodes:
            p = f"{d}/{name}"
            yield f"mknod({p})", (lambda p=p, m=mode, dv=dev: os.mknod(p, m, dv)), [p]
    yield "mknod(existing)", (lambda: os.mknod("own", stat.S_IFIFO | 0o644)), ["own"]
    yield "mkfifo(then_unlink)", (lambda: (os.mkfifo("d_open/q"), os.unlink("d_open/q"))), ["d_open/q"]
    yield "mkfifo(then_rename)", (
        lambda: (os.mkfifo("d_open/q2"), os.rename("d_open/q2", "d_open/q3"))
    ), ["d_open/q2", "d_open/q3"]


def family_access():
    for t in ["own", "other", "ro_own", "none_other", "d_nox/f", "d_own", "suid_own", "missing"]:
        for name, m in [("r", os.R_OK), ("w", os.W_OK), ("x", os.X_OK), ("f", os.F_OK)]:
            yield f"access({t},{name})", (lambda t=t, m=m: check_access(t, m)), []


def check_access(path, mode):
    if not os.access(path, mode):
        raise PermissionError(errno.EACCES, "access")


FAMILIES = [
    ("open", family_open),
    ("create", family_create),
    ("remove", family_remove),
    ("rename", family_rename),
    ("chmod", family_chmod),
    ("chown", family_chown),
    ("truncate", family_truncate),
    ("write", family_write),
    ("utime", family_utime),
    ("mknod", family_mknod),
    ("access", family_access),
]


def run_family(cases, uid):
    """In a child process as `uid`: each case, one line each."""
    if uid != 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    os.umask(0o022)
    lines = []
    for name, action, paths in cases:
        try:
            action()
            result = "ok"
        except OSError as e:
            result = err_name(e)
        state = "; ".join(f"{p}={describe(p)}" for p in paths)
        lines.append(f"{name}: {result}" + (f" [{state}]" if state else ""))
    return lines


def main():
    top = os.path.abspath(sys.argv[1])
    for caller, uid in [("root", 0), ("user", USER)]:
        for family, make_cases in FAMILIES:
            base = os.path.join(top, f"{caller}-{family}")
            fixture(base)
            os.chdir(base)
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                out = "\n".join(run_family(list(make_cases()), uid))
                os.write(write, out.encode() + b"\n")
                os._exit(0)
            os.close(write)
            with os.fdopen(read) as r:
                for line in r:
                    print(f"{caller} {family} {line}", end="")
            _, status = os.waitpid(pid, 0)
            if status != 0:
                sys.exit(f"{caller} {family}: the case process failed ({status})")
            os.chdir(top)
            shutil.rmtree(base)


if __name__ == "__main__":
    main()
