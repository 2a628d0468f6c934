#!/usr/bin/env python3
"""Negative entries: negative.py HERE THERE, two mounts of one file system. A missing
name is remembered for the attribute timeout (1 s) on the mount that looked it up, a
create through that same mount shows at once, and another mount's create shows once the
timeout passes. Prints `ok`."""

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
print("ok")
