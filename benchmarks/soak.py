"""Fault soak: searches against one PostgreSQL database while controllers and workers are SIGKILLed.

One uninterrupted search is the reference. Then ``--searches`` studies run the same search; each
attempt is SIGKILLed after a random delay (its controller, with the local Ray it started, or one
of its evaluator actors), at most ``--kills`` times per study, and the same command is re-run
until the study is ``done``. At the end, for every study:

- lost: evaluations of the reference missing from the study (must be 0);
- duplicated: (policy, kind) pairs stored more than once (must be 0);
- front: policy ids and quality equal to the reference's;

    python benchmarks/soak.py [--searches 4] [--kills 2] [--seed 0] [--budget-s 1200]

Everything listens on loopback (the test PostgreSQL server, the local Ray of each controller).
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "service"))

from conftest import PostgresServer  # noqa: E402  (the throw-away server the tests use)

SEARCH = ["--points", "6", "--workers", "2"]


def _command(url: str, study: str) -> list[str]:
    return [str(Path(sys.executable).with_name("autocomp")), "search", "--db", url, "--study", study, *SEARCH]


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (from /proc: no psutil needed)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the controller's session: it and the local Ray it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _attempt(url: str, study: str, rng: random.Random, kill: bool, log: list[str]) -> tuple[bool, str | None]:
    """Run the search once; with ``kill``, SIGKILL a controller or a worker after a random delay.

    Returns (finished, what was killed).
    """
    proc = subprocess.Popen(_command(url, study), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    if kill and rng.random() < 0.5:
        # a worker: wait for the evaluator actors (the evaluate stage), then kill one mid-sweep
        deadline = time.monotonic() + 300
        actors: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None and not actors:
            actors = [p for p in _descendants(proc.pid) if "EvaluatorActor" in _cmdline(p)]
            time.sleep(0.1)
        if actors and proc.poll() is None:
            time.sleep(rng.uniform(0.0, 1.5))
            victim = rng.choice(actors)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                victim = 0
            out, _ = proc.communicate(timeout=900)
            _kill_group(proc)
            if victim:
                log.append(f"{study}: killed worker {victim} -> controller exit {proc.returncode}")
                return proc.returncode == 0, "worker"
            return proc.returncode == 0, None
    elif kill:
        deadline = time.monotonic() + rng.uniform(8.0, 60.0)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
            log.append(f"{study}: killed controller {proc.pid}")
            return False, "controller"
    out, _ = proc.communicate(timeout=900)
    _kill_group(proc)                              # nothing of this run may linger into the next
    if proc.returncode != 0:
        log.append(f"{study}: exit {proc.returncode}: {out.strip().splitlines()[-1] if out.strip() else ''}")
    return proc.returncode == 0, None


def _summary(url: str, study: str) -> dict:
    from autocomp.report import front
    from autocomp.store import Store

    store = Store(url)
    st = store.get_study(study)
    rows: dict[tuple[str, str], int] = {}
    for kind in ("ptq", "qat"):
        for e in store.list_evaluations(st, kind=kind):
            rows[(e.policy_id, e.kind)] = rows.get((e.policy_id, e.kind), 0) + 1
    pts = front(store, st)
    return {"status": st.status, "evaluations": rows,
            "front": sorted((p["policy_id"], round(p["accuracy"], 6)) for p in pts)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--searches", type=int, default=4)
    ap.add_argument("--kills", type=int, default=2, help="most SIGKILLs per study")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=1800, help="stop starting new attempts after this")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    server = PostgresServer()
    server.start()
    t0 = time.monotonic()
    log: list[str] = []
    try:
        url = server.create_db()
        ok, _ = _attempt(url, "reference", rng, kill=False, log=log)
        assert ok, log
        ref_s = time.monotonic() - t0
        ref = _summary(url, "reference")
        kills = {"controller": 0, "worker": 0}
        attempts = 0
        for i in range(args.searches):
            study, done, left = f"soak{i}", False, args.kills
            while not done and time.monotonic() - t0 < args.budget_s:
                done, killed = _attempt(url, study, rng, kill=left > 0, log=log)
                attempts += 1
                if killed:
                    kills[killed] += 1
                    left -= 1
        lost = dup = mismatched = unfinished = evaluations = 0
        for i in range(args.searches):
            s = _summary(url, f"soak{i}")
            evaluations += sum(s["evaluations"].values())
            lost += len(set(ref["evaluations"]) - set(s["evaluations"]))
            dup += sum(1 for n in s["evaluations"].values() if n > 1)
            mismatched += s["front"] != ref["front"]
            unfinished += s["status"] != "done"
    finally:
        server.stop()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    print(f"search: autocomp search {' '.join(SEARCH)} on digits, one PostgreSQL database")
    print(f"reference run: {ref_s:.0f} s, {len(ref['evaluations'])} evaluations, front of {len(ref['front'])}")
    print(f"soak: {args.searches} searches, {attempts} attempts, kills: {kills['controller']} controllers + "
          f"{kills['worker']} workers, {evaluations} evaluations stored, {time.monotonic() - t0:.0f} s in all")
    print(f"lost = {lost}, duplicated = {dup}, fronts different from the reference = {mismatched}, "
          f"studies not done = {unfinished}")
    for line in log:
        print("  " + line)
    if lost or dup or mismatched or unfinished:
        sys.exit(1)


if __name__ == "__main__":
    main()
