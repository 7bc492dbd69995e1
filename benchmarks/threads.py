"""Two torch processes on the same cores: how much each slows the other, and which setting helps.

Each worker times a loop of small matrix products (the shape of a mask step's many small operations) and a
few large ones, alone and then with a second worker running the same loop at the same time. Settings: torch's
default thread count, OMP_WAIT_POLICY=PASSIVE (threads sleep instead of spinning while they wait), and one
thread per process.

    python benchmarks/threads.py --out benchmarks/results/threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKER = r"""
import sys, time, torch
threads = int(sys.argv[1])
if threads:
    torch.set_num_threads(threads)
a, b = torch.randn(64, 64), torch.randn(64, 64)
x, y = torch.randn(512, 512), torch.randn(512, 512)
for _ in range(200):
    a @ b
t0 = time.perf_counter()
for _ in range(20000):
    a @ b
small = time.perf_counter() - t0
t0 = time.perf_counter()
for _ in range(60):
    x @ y
large = time.perf_counter() - t0
print(f"{small} {large} {torch.get_num_threads()}")
"""


def run(n_procs: int, env_extra: dict, threads: int) -> list[tuple[float, float, int]]:
    env = {**os.environ, **env_extra}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(threads)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(n_procs)
    ]
    out = []
    for p in procs:
        small, large, t = p.communicate()[0].split()
        out.append((float(small), float(large), int(t)))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    settings = {
        "default": ({}, 0),
        "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, 0),
        "1 thread": ({}, 1),
    }
    result = {"cores": os.cpu_count(), "settings": {}}
    for name, (env, threads) in settings.items():
        alone = run(1, env, threads)[0]
        pair = run(2, env, threads)
        row = {
            "threads": alone[2],
            "alone_small_s": alone[0],
            "alone_large_s": alone[1],
            "pair_small_s": [p[0] for p in pair],
            "pair_large_s": [p[1] for p in pair],
            "small_slowdown": max(p[0] for p in pair) / alone[0],
            "large_slowdown": max(p[1] for p in pair) / alone[1],
        }
        result["settings"][name] = row
        print(
            f"{name:26s} threads {row['threads']}: small ops x{row['small_slowdown']:.1f}, "
            f"large ops x{row['large_slowdown']:.1f} when two processes share the cores",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"{time.time() - t0:.0f} s")
