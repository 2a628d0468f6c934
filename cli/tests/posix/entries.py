#!/usr/bin/env python3
"""Entries: entries.py HERE THERE, two mounts of one file system. A missing name is
remembered for the attribute timeout (1 s) on the mount that looked it up, a create
through that same mount shows at once, and another mount's create shows once the
timeout passes; a listing followed by stats (readdirplus) gives every file's size and
mode as written through the other mount. Prints `ok`."""

import os
import sys
import time

here, there = sys.argv[1], sys.argv[2]
name = "late-%d" % os.getpid()
mine, theirs = os.path.join(here, name), os.path.join(there, name)
assert not os.path.exists(mine)           # a negative entry on HERE
t0 = time.time()
open(theirs, "w").close()                 # made through THERE
if time.time() - t0 < 0.5:                # HERE still answers from its negative entry
    assert not os.path.exists(mine), "no negative entry: HERE asked the MDS again"
deadline = time.time() + 3
while not os.path.exists(mine):           # HERE sees it within the timeout
    assert time.time() < deadline, "the other mount's create never showed"
    time.sleep(0.05)
own = os.path.join(here, "own-%d" % os.getpid())
assert not os.path.exists(own)
open(own, "w").close()                    # made through HERE: no wait
assert os.path.exists(own), "a create hidden by this mount's own negative entry"
os.unlink(theirs)

# A listing followed by stats (readdirplus): the attributes it carried are right.
d_there, d_here = os.path.join(there, "listing"), os.path.join(here, "listing")
os.mkdir(d_there)
for i in range(60):
    with open(os.path.join(d_there, "f%d" % i), "wb") as f:
        f.write(b"x" * i)
    os.chmod(os.path.join(d_there, "f%d" % i), 0o600 + (i % 8))
time.sleep(1.1)  # past the attribute timeout of anything HERE saw
seen = {}
for name in os.listdir(d_here):
    st = os.lstat(os.path.join(d_here, name))
    seen[name] = (st.st_size, st.st_mode & 0o777)
assert seen == {"f%d" % i: (i, 0o600 + (i % 8)) for i in range(60)}, seen
print("ok")
