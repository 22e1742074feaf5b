"""The HTTP/2 guard's cost per frame (quiesce.dataplane.h2.guard), A/B between two trees:

    git worktree add /tmp/wt-base COMMIT
    python3 bench/h2_guard_cost.py /tmp/wt-base /work/main [--rounds 6]

Each round runs both trees, alternating, in fresh processes: ``Guard.feed`` on one read of
ten request HEADERS frames (END_STREAM|END_HEADERS, 40-byte header blocks) and a
WINDOW_UPDATE, the best of 5 timings of 200,000 reads; prints µs per frame for each tree and
their difference (BENCHMARKS.md, "HTTP/2", the guard's frame size check)."""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import sys, timeit
sys.path.insert(0, sys.argv[1] + "/src")
from quiesce.dataplane.h2.guard import Guard, Limits
def frame(kind, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload
data = b"".join(frame(1, 5, 2 * i + 1, b"x" * 40) for i in range(10))
data += frame(8, 0, 0, b"\\0\\0\\1\\0")
g = Guard(Limits(), 0.0, preface=False)
n = 200000
print(min(timeit.repeat(lambda: g.feed(data, 0.0), number=n, repeat=5)) / n / 11 * 1e6)
"""


def run(tree: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, tree], capture_output=True, check=True)
    return float(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    base: list[float] = []
    new: list[float] = []
    for _ in range(args.rounds):
        base.append(run(args.base))
        new.append(run(args.new))
    b, n = sorted(base)[len(base) // 2], sorted(new)[len(new) // 2]
    print(f"base {args.base}: {b:.3f} µs per frame (median of {args.rounds})")
    print(f"new  {args.new}: {n:.3f} µs per frame (median of {args.rounds})")
    print(f"difference: {n - b:+.3f} µs per frame ({n / b:.2f}x)")


if __name__ == "__main__":
    main()
