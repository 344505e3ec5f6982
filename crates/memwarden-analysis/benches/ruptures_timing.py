"""Times ruptures' PELT on a series, for the comparison in benches/pelt.rs.

usage: ruptures_timing.py SERIES.json PENALTY MIN_SIZE JUMP
SERIES.json holds a JSON array of numbers. Prints one JSON object: the seconds of one
fit + predict (the best of --repeat runs, default 1) and the breakpoints.
"""
import json
import sys
import time

import numpy as np
import ruptures as rpt


def main():
    path, pen, min_size, jump = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    repeat = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    x = np.array(json.load(open(path)), dtype=np.float64)
    best, bkps = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        bkps = rpt.Pelt(model="l2", min_size=min_size, jump=jump).fit(x).predict(pen=pen)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    json.dump({"seconds": best, "breakpoints": [int(b) for b in bkps],
               "ruptures": rpt.__version__, "numpy": np.__version__}, sys.stdout)


if __name__ == "__main__":
    main()
