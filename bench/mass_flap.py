#!/usr/bin/env python3
"""Mass flap (issue 21): 10,000 servers of one pool go down and come back up while requests
run through another pool of the same ``quiesce run`` process.

    python3 bench/mass_flap.py [--servers 10000] [--interval 2] [--clients 4] [--old SRC]

nginx (one worker) is the fake: it answers the flapping pool's health checks on one port,
200 while a file is absent and 503 while it is there, and the traffic pool's requests
("ok", keep-alive) on another. All 10,000 servers share its address (distinct names). The
child is ``quiesce run``'s own code path (``quiesce.app.run.run_forever``) with a probe
timer on its event loop: every 10 ms it notes how late it woke; the worst lateness per
quarter second is the loop lag (a loop iteration longer than that delays it by as much).
``--clients`` threads send keep-alive requests through the service all along.

The probe also prints each of its lateness samples: the loop lag p99 is over all of them.

Phases: all servers up (one passing check each), then 6 s idle (traffic and checks: the idle
p99 and lag), then the file appears (every check fails: all 10,000 go down, one failed
check each) and, once the pool is down, disappears (all come back up): that span is
"during". ``--old SRC``: the same run with another checkout's ``src`` too, side by side.

``FLAP_STALLS=1``: a thread samples the loop's stack every 5 ms while it has not beaten for
50 ms and reports each such stall with its wall time, the loop thread's CPU time in it (a
stall with little CPU is the machine's: the process was not running) and its most frequent
stacks; every collection of the cyclic GC over 10 ms is reported too, and after the flap what
the collector tracks and the most checks launched at once. The stalls of the flap are listed
at the end (to stderr). ``FLAP_PROFILE=FILE``: a cProfile dump of the child.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from health_bench import cpu_seconds, free_port, wait_listening  # noqa: E402
from reload_bench import Clients, pct  # noqa: E402

PROBE_EVERY = 0.010
REPORT_EVERY = 0.25


def nginx_conf(workdir: Path, health: int, web: int) -> str:
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/t1; proxy_temp_path {workdir}/t2;
    fastcgi_temp_path {workdir}/t3; uwsgi_temp_path {workdir}/t4; scgi_temp_path {workdir}/t5;
    server {{
        listen 127.0.0.1:{health} backlog=4096;
        keepalive_timeout 0;
        location / {{
            if (-f {workdir}/down) {{ return 503 "down\\n"; }}
            return 200 "ok\\n";
        }}
    }}
    server {{
        listen 127.0.0.1:{web} backlog=4096;
        keepalive_requests 100000;
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def quiesce_conf(
    n: int, health: int, web: int, interval: float, pw_hash: str, store: bool = True
) -> str:
    servers = "\n".join(f"      - {{name: s{i}, address: 127.0.0.1:{health}}}" for i in range(n))
    state = "" if store else "state: {sqlite: null}\n"
    return f"""{state}
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{pw_hash}", role: admin}}]
healthmonitors:
  hc: {{type: http, send_interval: {interval}s, receive_timeout: {interval / 2}s,
        successful_checks: 1, failed_checks: 1}}
pools:
  web:
    servers: [{{name: w, address: 127.0.0.1:{web}}}]
  flap:
    healthmonitors: [hc]
    servers:
{servers}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""


# --- the child: quiesce run with a loop-lag probe --------------------------------------------


def child(config_path: str) -> int:
    import importlib

    from quiesce.config.loader import load_config

    try:  # quiesce.app is a package (issue 13); before, one module
        run_module: Any = importlib.import_module("quiesce.app.run")
    except ImportError:
        run_module = importlib.import_module("quiesce.app")

    apps: list[Any] = []

    class Probed(run_module.App):  # type: ignore[misc]
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            apps.append(self)

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        worst, since = 0.0, loop.time()
        samples: list[str] = []
        while True:
            t = loop.time()
            await asyncio.sleep(PROBE_EVERY)
            late = loop.time() - t - PROBE_EVERY
            worst = max(worst, late)
            samples.append(f"{late * 1000:.2f}")
            now = loop.time()
            if now - since >= REPORT_EVERY:
                eligible = apps[0].registry.pools["flap"].eligible_count if apps else -1
                print(
                    f"lag {time.monotonic():.4f} {worst * 1000:.3f} {eligible} "
                    + ",".join(samples),
                    flush=True,
                )
                worst, since = 0.0, now
                samples = []

    tasks: list[asyncio.Task[None]] = []
    # the loop's last beat: (monotonic, the loop thread's CPU time), set every 5 ms
    beat = [(time.monotonic(), time.thread_time())]

    async def heartbeat() -> None:
        while True:
            beat[0] = (time.monotonic(), time.thread_time())
            await asyncio.sleep(0.005)

    def watch_stalls(main: int) -> None:
        """FLAP_STALLS=1: each time the loop has not beaten for 50 ms, its stack sampled
        every 5 ms until it beats again; then one report (to stderr): the stall's wall time,
        the loop thread's CPU time in it (much less than the wall: the thread was waiting,
        for the CPU or the GIL), when it began, and the most frequent stacks with their
        sample counts (the first one in full, as ``Child.stalls`` reads it)."""
        import collections
        import traceback

        cpu_clock = time.pthread_getcpuclockid(main)
        while True:
            time.sleep(0.005)
            start = beat[0]
            if time.monotonic() - start[0] <= 0.05:
                continue
            samples: collections.Counter[tuple[str, ...]] = collections.Counter()
            full: dict[tuple[str, ...], str] = {}
            while beat[0] is start:
                frame = sys._current_frames().get(main)
                if frame is not None:
                    stack = traceback.extract_stack(frame, limit=12)
                    key = tuple(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack)
                    samples[key] += 1
                    if key not in full:
                        full[key] = "".join(traceback.format_list(stack))
                time.sleep(0.005)
            wall = beat[0][0] - start[0]
            cpu = beat[0][1] - start[1]
            if wall <= 0.05:
                continue
            top = samples.most_common(3)
            lines = [
                f"stall {wall * 1000:.0f} ms\n{full[top[0][0]] if top else ''}"
                f"stall-info at {start[0]:.4f} cpu {cpu * 1000:.0f} ms "
                f"(thread cpu now {time.clock_gettime(cpu_clock):.3f} s) "
                f"samples {sum(samples.values())}"
            ]
            for key, n in top:
                lines.append(f"stall-top {n} " + " < ".join(reversed(key[-6:])))
            print("\n".join(lines), file=sys.stderr, flush=True)

    def watch_gc() -> None:
        """FLAP_STALLS=1: every collection of the cyclic GC over 10 ms (to stderr)."""
        import gc

        started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.monotonic()
                return
            took = time.monotonic() - started[0]
            if took > 0.01:
                print(
                    f"gc at {started[0]:.4f} generation {info['generation']} "
                    f"{took * 1000:.0f} ms collected {info['collected']}",
                    file=sys.stderr,
                    flush=True,
                )

        gc.callbacks.append(on_gc)

        def census() -> None:  # what the collector tracks (frozen objects aside), on request
            import collections

            flag = Path(config_path).with_suffix(".census")
            while True:
                time.sleep(0.2)
                if flag.exists():
                    flag.unlink()
                    counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
                    top = ", ".join(f"{k} {v}" for k, v in counts.most_common(12))
                    print(f"gc census {sum(counts.values())}: {top}", file=sys.stderr, flush=True)
                    sizes = sorted(launches, reverse=True)[:5]
                    print(f"gc census: most checks launched at once {sizes}", file=sys.stderr)

        threading.Thread(target=census, daemon=True).start()
        from quiesce.health import manager

        launches: list[int] = []
        start_batch = manager.HealthManager._start_batch

        def counted(self: Any, batch: list[Any]) -> None:
            launches.append(len(batch))
            start_batch(self, batch)

        manager.HealthManager._start_batch = counted  # type: ignore[method-assign]

    async def before_start() -> None:
        tasks.append(asyncio.get_running_loop().create_task(probe()))
        if os.environ.get("FLAP_STALLS"):
            tasks.append(asyncio.get_running_loop().create_task(heartbeat()))
            watch_gc()
            threading.Thread(
                target=watch_stalls, args=(threading.get_ident(),), daemon=True
            ).start()

    run_module.App = Probed
    config = load_config(config_path)
    if os.environ.get("FLAP_PROFILE"):  # where the child's time goes: a cProfile dump
        import cProfile

        with cProfile.Profile() as prof:
            code = run_module.run_forever(
                config, Path(config_path).parent, before_start=before_start
            )
        prof.dump_stats(os.environ["FLAP_PROFILE"])
        return int(code)
    return run_module.run_forever(config, Path(config_path).parent, before_start=before_start)


# --- the parent ----------------------------------------------------------------------------------


class Child:
    def __init__(self, src: str, cfg: Path) -> None:
        # the process log (a line per state event) to a file, as a service manager would
        # take it; only the probe's lines come through the pipe
        self.log = cfg.with_suffix(".log")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(cfg)],
            cwd=cfg.parent,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
            env={**os.environ, "PYTHONPATH": src, "PYTHONUNBUFFERED": "1"},
        )
        self.lag: list[tuple[float, float]] = []  # (monotonic, worst ms in the quarter second)
        self.samples: list[tuple[float, float]] = []  # every probe's lateness (ms), by quarter
        self.eligible = -1
        self.ports: dict[str, int] = {}
        self.ready = threading.Event()
        threading.Thread(target=self.read, daemon=True).start()
        if not self.ready.wait(300):
            raise SystemExit(f"quiesce did not start: {self.log.read_text()[-2000:]}")

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("lag "):
                _, t, ms, eligible, *each = line.split()
                self.lag.append((float(t), float(ms)))
                self.samples += [(float(t), float(x)) for x in ",".join(each).split(",") if x]
                self.eligible = int(eligible)
            elif m := re.search(r"(service www|admin) listening on port (\d+)", line):
                self.ports[m.group(1)] = int(m.group(2))
            elif "quiesce: ready" in line:
                self.ready.set()

    def wait_eligible(self, n: int, timeout: float) -> float:
        end = time.monotonic() + timeout
        while self.eligible != n:
            if time.monotonic() > end:
                raise SystemExit(f"the flap pool has {self.eligible} eligible, not {n}")
            time.sleep(0.05)
        return time.monotonic()

    def lag_max(self, a: float, b: float) -> float:
        return max((ms for t, ms in self.lag if a <= t <= b), default=float("nan"))

    def lag_p99(self, a: float, b: float) -> float:
        """The 99th percentile of every probe's lateness (ms) in [a, b]."""
        return pct([ms / 1000 for t, ms in self.samples if a <= t <= b], 0.99)

    def lag_over(self, a: float, b: float, ms: float = 50.0) -> list[tuple[float, float]]:
        """The quarter seconds of [a, b] whose worst lateness passed ``ms``: (since a, ms)."""
        return [(round(t - a, 2), x) for t, x in self.lag if a <= t <= b and x > ms]

    def stalls(self) -> tuple[int, int]:
        """FLAP_STALLS=1: the stalls reported (loop not beaten for 50 ms) and how many of
        them were inside SQLite (a frame of quiesce/store/sqlite*.py or sqlite3 on the stack)."""
        stalls = in_store = 0
        for chunk in self.log.read_text(errors="replace").split("stall ")[1:]:
            head, _, rest = chunk.partition("\n")
            if not head.endswith(" ms"):
                continue
            stack = []
            for line in rest.splitlines():
                if not line.startswith("  "):
                    break
                stack.append(line)
            stalls += 1
            in_store += any("store/sqlite" in x or "sqlite3" in x for x in stack)
        return stalls, in_store

    def stall_report(self, a: float, b: float) -> list[str]:
        """FLAP_STALLS=1: the stalls that began in [a, b], one line each: when (s since
        ``a``), wall and CPU ms, and the stack seen most often (innermost first)."""
        out = []
        for chunk in self.log.read_text(errors="replace").split("\nstall ")[1:]:
            head, _, rest = chunk.partition("\n")
            info = re.search(r"stall-info at ([\d.]+) cpu (\d+) ms", rest)
            top = re.search(r"stall-top (\d+) (.*)", rest)
            if not head.endswith(" ms") or info is None:
                continue
            at = float(info.group(1))
            if a <= at <= b:
                where = f"{top.group(1)}x {top.group(2)}" if top else ""
                out.append(f"+{at - a:6.2f} s {head:>7} cpu {info.group(2):>4} ms  {where}")
        for m in re.finditer(r"gc census.*", self.log.read_text()):
            out.append("+ census " + m.group(0))
        for m in re.finditer(r"gc at ([\d.]+) generation (\d) (\d+) ms", self.log.read_text()):
            if a <= float(m.group(1)) <= b:
                out.append(
                    f"+{float(m.group(1)) - a:6.2f} s gc of generation {m.group(2)}: "
                    f"{m.group(3)} ms"
                )
        return sorted(out)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def one_run(src: str, args: argparse.Namespace, workdir: Path, health: int, web: int) -> dict:
    from quiesce.security import hash_password

    cfg = workdir / f"quiesce-{abs(hash(src))}.yaml"
    pw = hash_password("pw")
    cfg.write_text(quiesce_conf(args.servers, health, web, args.interval, pw, not args.no_store))
    down = workdir / "down"
    down.unlink(missing_ok=True)
    child = Child(src, cfg)
    clients = None
    t_flip = t_up = 0.0
    try:
        child.wait_eligible(args.servers, 900)
        clients = Clients(child.ports["service www"], args.clients)
        time.sleep(2.0)  # warm up
        t_idle = time.monotonic()
        time.sleep(args.idle)
        t_flip = time.monotonic()
        idle = clients.window(t_idle, t_flip)
        idle_lag = child.lag_max(t_idle, t_flip)
        cpu0 = cpu_seconds(child.proc.pid)
        down.touch()
        t_down = child.wait_eligible(0, 900)
        down.unlink()
        t_up = child.wait_eligible(args.servers, 900)
        cpu1 = cpu_seconds(child.proc.pid)
        if os.environ.get("FLAP_STALLS"):
            cfg.with_suffix(".census").touch()
        time.sleep(REPORT_EVERY * 2)  # the last lag report of the window
        during = clients.window(t_flip, t_up)
        return {
            "src": src,
            "idle": (pct(idle, 0.5), pct(idle, 0.99), len(idle)),
            "idle_lag": idle_lag,
            "idle_lag_p99": child.lag_p99(t_idle, t_flip),
            "during_lag_p99": child.lag_p99(t_flip, t_up),
            "during": (pct(during, 0.5), pct(during, 0.99), pct(during, 1.0), len(during)),
            "during_lag": child.lag_max(t_flip, t_up),
            "over_50ms": child.lag_over(t_flip, t_up + REPORT_EVERY),
            "idle_over_50ms": child.lag_over(t_idle, t_flip),
            "down_s": t_down - t_flip,
            "up_s": t_up - t_down,
            "cpu_s": cpu1 - cpu0,
            "failures": clients.failures,
        }
    finally:
        if clients is not None:
            clients.stop.set()
        child.stop()
        if os.environ.get("FLAP_STALLS"):
            print(f"{src}: stalls (all, inside SQLite): {child.stalls()}", file=sys.stderr)
            if t_up:
                print("stalls from the flip to all up (s since the flip):", file=sys.stderr)
                report = child.stall_report(t_flip, t_up + 1.0)
                for line in report:
                    print("  " + line, file=sys.stderr)
                cpu = [int(m.group(1)) for x in report if (m := re.search(r"cpu +(\d+) ms", x))]
                print(
                    f"{src}: {len(cpu)} stalls in the flip, {sum(c >= 50 for c in cpu)} of them "
                    f"with 50 ms or more of the loop's CPU (the most: {max(cpu, default=0)} ms)",
                    file=sys.stderr,
                )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--idle", type=float, default=6.0)
    ap.add_argument("--old", help="another checkout's src directory: the same run with it too")
    ap.add_argument(
        "--no-store", action="store_true", help="state: {sqlite: null} (events kept in memory)"
    )
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    sys.path.insert(0, str(ROOT / "src"))
    workdir = Path(tempfile.mkdtemp(prefix="quiesce-flap-"))
    health, web = free_port(), free_port()
    (workdir / "nginx.conf").write_text(nginx_conf(workdir, health, web))
    nginx = subprocess.Popen(
        ["nginx", "-c", str(workdir / "nginx.conf"), "-p", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    rows = []
    try:
        wait_listening(health, "127.0.0.1")
        wait_listening(web, "127.0.0.1")
        srcs = [str(ROOT / "src")] + ([args.old] if args.old else [])
        for src in srcs:
            rows.append(one_run(src, args, workdir, health, web))
            print(rows[-1], file=sys.stderr, flush=True)
    finally:
        nginx.send_signal(signal.SIGTERM)
        nginx.wait(10)
    print(
        f"{args.servers:,} servers flapping (HTTP checks every {args.interval:g} s), "
        f"{args.clients} keep-alive clients on the other pool\n"
    )
    print(
        "| code | idle p50 / p99 (ms) | idle loop lag p99 / max (ms) "
        "| during p50 / p99 / max (ms) | during loop lag p99 / max (ms) | p99 during / idle "
        "| all down in (s) | all up in (s) "
        "| CPU s during | failed requests | lag over 50 ms (idle, during) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        name = "this tree" if i == 0 else f"old ({r['src']})"
        idle, dur = r["idle"], r["during"]
        print(
            f"| {name} | {idle[0]:.2f} / {idle[1]:.2f} "
            f"| {r['idle_lag_p99']:.1f} / {r['idle_lag']:.1f} "
            f"| {dur[0]:.2f} / {dur[1]:.2f} / {dur[2]:.1f} "
            f"| {r['during_lag_p99']:.1f} / {r['during_lag']:.1f} "
            f"| {dur[1] / idle[1]:.2f}× | {r['down_s']:.1f} | {r['up_s']:.1f} "
            f"| {r['cpu_s']:.1f} | {r['failures']} "
            f"| {len(r['idle_over_50ms'])}, {len(r['over_50ms'])} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
