#!/usr/bin/env python3
"""The same fields as a memwarden snapshot, read the usual Python way (psutil), for comparison.

Usage: psutil_reader.py ROOT [PASSES]  ->  prints "psutil: N processes, X.XX ms per pass".
psutil honours psutil.PROCFS_PATH, so it reads the fake machine under ROOT/proc.
"""
import os
import sys
import time

import psutil


def one_pass(proc_dir):
    seen = 0
    for p in psutil.process_iter():
        try:
            with p.oneshot():
                p.create_time()
                p.name()
                p.uids()
                p.cmdline()
                p.memory_info()
            with open(f"{proc_dir}/{p.pid}/cgroup", "rb") as f:
                f.read()
            fdinfo = f"{proc_dir}/{p.pid}/fdinfo"
            for fd in os.listdir(fdinfo):
                with open(f"{fdinfo}/{fd}", "rb") as f:
                    text = f.read()
                if b"drm-driver:" in text:
                    for line in text.split(b"\n"):
                        if line.startswith((b"drm-memory-", b"drm-resident-", b"drm-client-id", b"drm-pdev")):
                            line.split(b":", 1)
            seen += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, PermissionError):
            continue
    return seen


def main():
    root = sys.argv[1]
    passes = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    proc_dir = os.path.join(root, "proc")
    psutil.PROCFS_PATH = proc_dir
    seen = one_pass(proc_dir)  # warm-up, as procfloor's first pass warms the page cache
    t0 = time.perf_counter()
    for _ in range(passes):
        # process_iter caches Process objects between calls; a monitor would keep them too.
        one_pass(proc_dir)
    ms = (time.perf_counter() - t0) * 1e3 / passes
    print(f"psutil: {seen} processes, {ms:.2f} ms per pass")


if __name__ == "__main__":
    main()
