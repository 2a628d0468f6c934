"""The interception library under Python: file objects, os calls, directory scans, a
subprocess writing to an inherited descriptor, fork, mmap and shutil, in a directory
of a nacre mount (argv[1]). Prints "ok", or fails with a traceback."""
import hashlib
import mmap
import os
import shutil
import subprocess
import sys

d = sys.argv[1]
p = lambda *names: os.path.join(d, *names)

data = os.urandom(5 << 20) + b"tail"
with open(p("big"), "wb") as f:
    f.write(data)
with open(p("big"), "rb") as f:
    assert f.read() == data
    f.seek(1 << 20)
    assert f.read(4) == data[1 << 20:(1 << 20) + 4]
    assert f.tell() == (1 << 20) + 4
assert os.stat(p("big")).st_size == len(data)
assert os.path.getsize(p("big")) == len(data)

# Text, append, truncate, os-level descriptors.
with open(p("t.txt"), "w") as f:
    f.write("one\n")
with open(p("t.txt"), "a") as f:
    f.write("two\n")
with open(p("t.txt")) as f:
    assert f.read().splitlines() == ["one", "two"]
fd = os.open(p("t.txt"), os.O_RDWR)
os.ftruncate(fd, 3)
assert os.fstat(fd).st_size == 3
assert os.pread(fd, 10, 0) == b"one"
os.close(fd)

# Directories and names.
os.makedirs(p("a", "b", "c"))
for i in range(20):
    with open(p("a", "b", f"f{i}"), "w") as f:
        f.write(str(i))
names = sorted(e.name for e in os.scandir(p("a", "b")))
assert names == sorted(["c"] + [f"f{i}" for i in range(20)]), names
walked = sum(len(files) for _, _, files in os.walk(p("a")))
assert walked == 20, walked
os.rename(p("a", "b", "f0"), p("a", "moved"))
assert not os.path.exists(p("a", "b", "f0")) and os.path.isfile(p("a", "moved"))
shutil.rmtree(p("a"))
assert not os.path.exists(p("a"))

# A child process writes to a descriptor it inherits (spawned: posix_spawn).
with open(p("child.out"), "w") as f:
    f.write("parent\n")
    f.flush()
    subprocess.run(["sh", "-c", "echo child"], stdout=f, check=True)
with open(p("child.out")) as f:
    assert f.read() == "parent\nchild\n"

# fork: the child reads on from the offset the parent left.
fd = os.open(p("big"), os.O_RDONLY)
os.lseek(fd, 100, os.SEEK_SET)
pid = os.fork()
if pid == 0:
    os._exit(0 if os.read(fd, 4) == data[100:104] else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
os.close(fd)

# mmap maps the file through the mount; shutil copies through sendfile.
with open(p("big"), "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
    assert m[:16] == data[:16]
    m[:4] = b"MMAP"
    m.flush()
    m.close()
shutil.copyfile(p("big"), p("copy"))
with open(p("copy"), "rb") as f:
    got = f.read()
assert got[:4] == b"MMAP" and got[4:] == data[4:]
assert hashlib.sha256(got).hexdigest() == hashlib.sha256(b"MMAP" + data[4:]).hexdigest()
os.unlink(p("copy"))
print("ok")
