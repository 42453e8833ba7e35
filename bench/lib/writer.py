"""Copies every file of SRC into DEST with open/write/close, the way Ghost writes a
memory, and prints the seconds until the last close returned."""
import os
import sys
import time

src, dest = sys.argv[1], sys.argv[2]
names = sorted(os.listdir(src))
blobs = [(n, open(os.path.join(src, n), "rb").read()) for n in names]
t0 = time.perf_counter()
for n, b in blobs:
    with open(os.path.join(dest, n), "wb") as f:
        f.write(b)
print(f"{time.perf_counter() - t0:.6f}")
