"""`autocomp search` on a real multi-node Ray cluster with a real PostgreSQL study database, and
the faults a long-running search must survive: a worker node dying, the controller being
SIGKILLed (resume loses and repeats nothing, and ends on the same front), and Ctrl-C.

The cluster (a CPU-less head and two one-CPU worker nodes, ``_ray_cluster.py``) runs in its own
process and every search in its own ``autocomp`` process, because the rest of the suite shares
one local Ray session. The workload is a user file in a folder of its own, loaded as
``wl.py:make`` from that folder without PYTHONPATH, so the workers can only find it through
the runtime env that ships it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autocomp.report import front
from autocomp.store import Store

CLUSTER = str(Path(__file__).with_name("_ray_cluster.py"))

# The built-in digits CNN behind a user factory; its metric is slowed down so that a fault
# injected after the first stored evaluation lands while others are still running.
WORKLOAD = '''
import time
from autocomp.workloads.digits import digits

def make():
    wl = digits()
    metric = wl.metric
    def slow_metric(model, batches):
        time.sleep(0.5)
        return metric(model, batches)
    wl.metric = slow_metric
    return wl
'''


class RayCluster:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, CLUSTER, "2"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"Ray cluster did not start: {self.proc.stderr.read()[-2000:]}")
        first = json.loads(line)
        self.address, self.nodes = first["address"], first["nodes"]

    def cmd(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            self.proc.stdin.close()   # end of input: the helper shuts the cluster down
            self.proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def cluster():
    c = RayCluster()
    yield c
    c.close()


@pytest.fixture(scope="module")
def service(cluster, pg_server, tmp_path_factory):
    """The cluster, one PostgreSQL database, and the folder holding the user's workload file."""
    wl_dir = tmp_path_factory.mktemp("user_code")
    (wl_dir / "wl.py").write_text(WORKLOAD)
    return cluster, pg_server.create_db(), wl_dir


def _launch(service, study: str, *extra: str, as_json: bool = True) -> subprocess.Popen:
    cluster, url, wl_dir = service
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "AUTOCOMP_DB")}
    cmd = [sys.executable, "-m", "autocomp.cli", "search", "--address", cluster.address, "--db", url,
           "--model", "wl.py:make", "--study", study, "--points", "3", "--proxy", "quant_mse", *extra]
    if as_json:
        cmd.append("--json")
    # A session of its own: a signal to the group is what Ctrl-C in a terminal sends.
    return subprocess.Popen(cmd, cwd=wl_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for_evaluations(url: str, study: str, n: int, proc: subprocess.Popen) -> int:
    store = Store(url)
    try:
        while True:
            st = store.get_study(study, missing_ok=True)
            done = len(store.evaluated_ids(st)) if st is not None else 0
            if done >= n:
                return done
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"search exited ({proc.returncode}) before {n} evaluations:\n{out}\n{err}")
            time.sleep(0.1)
    finally:
        store.dispose()


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"search did not finish:\n{out}\n{err}")
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{out}\n{err}"
    return out, err


def _evaluations(url: str, study: str) -> dict[str, float]:
    store = Store(url)
    st = store.get_study(study)
    evals = store.list_evaluations(st)
    assert len({e.policy_id for e in evals}) == len(evals)          # never two rows of one policy
    return {e.policy_id: e.quality for e in evals}


def _front(url: str, study: str) -> list[tuple]:
    store = Store(url)
    return [(p["policy_id"], p["accuracy"], p["size"], p["bitops"], p["on_front"], p["baseline"])
            for p in front(store, store.get_study(study))]


@pytest.fixture(scope="module")
def node_killed_run(service):
    """A search during which one of the two worker nodes is SIGKILLed and a fresh node joins."""
    cluster, url, _ = service
    proc = _launch(service, "node-kill")
    _wait_for_evaluations(url, "node-kill", 1, proc)
    killed = cluster.cmd("kill")["killed"]
    added = cluster.cmd("add")["added"]
    out, err = _finish(proc)
    return {"out": json.loads(out), "err": err, "killed": killed, "added": added}


def test_search_on_cluster_with_postgresql_survives_a_dead_worker_node(service, node_killed_run):
    cluster, url, _ = service
    store = Store(url)
    st = store.get_study("node-kill")
    policies = {p.policy_id for p in store.list_policies(st)}
    evals = store.list_evaluations(st)

    assert st.status == "done"
    assert {e.policy_id for e in evals} == policies and len(evals) == len(policies)   # none lost
    # The dead node's in-flight evaluation went back to the queue and ran on a live node.
    assert "re-queued" in node_killed_run["err"]
    nodes = {e.extra["node"] for e in evals}
    assert nodes <= {*cluster.nodes, node_killed_run["added"]}
    # Work the dead node lost ran on a node that survived it (which one is up to the scheduler:
    # on an idle machine the surviving node may finish everything before the new one is up).
    assert nodes - {node_killed_run["killed"]}
    stored_front = [p["policy_id"] for p in node_killed_run["out"]["front"]]
    assert stored_front == [p[0] for p in _front(url, "node-kill")]
    assert any(p["on_front"] and not p["baseline"] for p in node_killed_run["out"]["front"])


def test_sigkilled_controller_resumes_without_losing_or_repeating_work(service, node_killed_run):
    _, url, _ = service
    proc = _launch(service, "resumed")
    _wait_for_evaluations(url, "resumed", 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _evaluations(url, "resumed")
    total = len(Store(url).list_policies(Store(url).get_study("resumed")))
    assert 2 <= len(before) < total                          # killed mid-search

    out, _ = _finish(_launch(service, "resumed", as_json=False))

    m = re.search(r"(\d+) evaluated now, (\d+) already stored", out)
    assert m, out
    assert (int(m.group(1)), int(m.group(2))) == (total - len(before), len(before))   # nothing repeated
    after = _evaluations(url, "resumed")
    assert len(after) == total and {k: after[k] for k in before} == before           # nothing lost
    # Same seed, same front as the search that was never interrupted (policies and accuracies).
    assert after == _evaluations(url, "node-kill")
    assert _front(url, "resumed") == _front(url, "node-kill")


def _wait_for_policies(url: str, study: str, proc: subprocess.Popen) -> None:
    """Until the sweep's policies are stored: the controller is then starting evaluator actors."""
    store = Store(url)
    try:
        while True:
            st = store.get_study(study, missing_ok=True)
            if st is not None and store.list_policies(st):
                return
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"search exited ({proc.returncode}) early:\n{out}\n{err}")
            time.sleep(0.1)
    finally:
        store.dispose()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(service, sig, code):
    """Ctrl-C (SIGINT to the foreground group) and SIGTERM (a scheduler, ``kill``) end the same way."""
    _, url, _ = service
    name = f"interrupted-{code}"
    proc = _launch(service, name)
    _wait_for_policies(url, name, proc)
    os.killpg(proc.pid, sig)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise

    assert proc.returncode == code, err
    assert f"resume with `autocomp search --study {name}`" in err
    assert "Traceback" not in err
    store = Store(url)
    st = store.get_study(name)
    assert st.status == "interrupted"
    assert st.config["resume_command"] == f"autocomp search --study {name}"
    assert len(store.evaluated_ids(st)) < len(store.list_policies(st))
