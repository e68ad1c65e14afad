"""`autocomp search --address ray://...` against a real Ray head with a Ray Client server.

The head is ``ray start --head --block`` in a session of its own, on loopback ports chosen free,
with its own ``--temp-dir`` and token authentication (Ray 2.60's default once a token exists)
from a token file of its own. It is stopped by signalling that process and then killing what is
left of its process group: nothing else on the machine is touched (no ``ray stop``). Each search
runs in its own ``autocomp`` process, because the rest of the suite shares one local Ray session.

The workload is a user file in a folder of its own, loaded as ``wl.py:make`` without
PYTHONPATH: the workers find it only through the runtime env shipped over the client
connection. Every process that loads it leaves a mark (pid, session, cwd), which shows where the
controller and the workers ran.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from autocomp.report import front
from autocomp.store import Store

WORKLOAD = '''
import json
import os
from pathlib import Path

from autocomp.workloads.digits import digits

MARKS = Path({marks!r})


def make():
    mark = {{"pid": os.getpid(), "sid": os.getsid(0), "cwd": os.getcwd()}}
    (MARKS / f"{{os.getpid()}}.json").write_text(json.dumps(mark))
    return digits()
'''

# Variables that would point a process at another cluster or another token.
_FOREIGN = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "PYTHONPATH", "AUTOCOMP_DB")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    env.update(extra)
    return env


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open at once while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except ProcessLookupError:
                pass
    return pids


class RayHead:
    """A Ray head with a Ray Client server on loopback, started and stopped by this test only."""

    def __init__(self, **head_env: str) -> None:
        # Short: Ray's unix sockets live under the temp dir (108-byte path limit).
        self.root = Path(tempfile.mkdtemp(prefix="acrc-"))
        self.temp_dir = self.root / "ray"
        self.token = self.root / "token"
        self.token.write_text(os.urandom(32).hex())
        gcs, self.client_port, *rest = _free_ports(9)
        node_manager, object_manager, dashboard, agent_http, agent_grpc, env_agent, metrics = rest
        self.args = [
            str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
            "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--ray-client-server-port={self.client_port}",
            f"--temp-dir={self.temp_dir}", "--num-cpus=2", "--object-store-memory=100000000",
            "--include-dashboard=false", f"--dashboard-port={dashboard}",
            f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
            f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
            # Workers take ports the OS hands out, not Ray's fixed 10002-19999 that other Ray
            # instances on this machine may hold.
            "--min-worker-port=0", "--max-worker-port=0", "--disable-usage-stats",
        ]
        self.auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token)}
        self.log = self.root / "ray-start.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=_env(**self.auth_env, **head_env), start_new_session=True)
        self.address = f"ray://127.0.0.1:{self.client_port}"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed ({self.proc.poll()}):\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        while True:   # the client server is a process of its own: wait until it listens
            try:
                socket.create_connection(("127.0.0.1", self.client_port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no Ray Client server on port {self.client_port}:\n"
                                       f"{self.log.read_text()[-3000:]}") from None
                time.sleep(0.2)

    def server_logs(self, limit: int = 4000) -> str:
        """The tails of the head's Ray Client server logs (the proxy's and each connection's)."""
        out = []
        for f in sorted((self.session_dir() / "logs").glob("ray_client_server*")):
            text = f.read_text(errors="replace")[-limit:]
            if text.strip():
                out.append(f"--- {f.name}\n{text}")
        return "\n".join(out)

    def session_dir(self) -> Path:
        return (self.temp_dir / "session_latest").resolve()

    def stop(self) -> None:
        """SIGTERM ``ray start --block`` (it stops its node), then SIGKILL what is left of its group."""
        pgid = self.proc.pid   # session and group leader (start_new_session)
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    pass
            deadline = time.monotonic() + 10
            while _group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.2)
            for pid in _group_members(pgid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(timeout=10)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def head():
    # The head gives the server it starts for each client connection 120 s to come up (Ray's
    # default is 30 s), as an administrator of a loaded head would.
    h = RayHead(RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S="120")
    try:
        h.wait_ready()
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_code")
    marks = tmp_path_factory.mktemp("marks")
    (folder / "wl.py").write_text(WORKLOAD.format(marks=str(marks)))
    return folder, marks


def _search(cwd: Path, db: str, study: str, *, env: dict[str, str], args: tuple[str, ...] = (),
            python: tuple[str, ...] = ("-m", "autocomp.cli")) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *python, "search", "--db", db, "--study", study, "--points", "3",
           "--proxy", "quant_mse", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


def test_search_over_ray_client(head, user_code, tmp_path):
    folder, marks = user_code
    db = f"sqlite:///{tmp_path / 'study.db'}"
    t0 = time.monotonic()
    r = _search(folder, db, "client", env=_env(**head.auth_env),
                args=("--address", head.address, "--model", "wl.py:make", "--json"))
    took = time.monotonic() - t0
    assert r.returncode == 0, f"exit {r.returncode}:\n{r.stdout}\n{r.stderr}\n{head.server_logs()}"
    for stage in ("start ray", "proxy quant_mse", "evaluate"):
        assert stage in r.stderr

    # Everything the sweep produced was evaluated and stored; the front is the stored one.
    store = Store(db)
    try:
        st = store.get_study("client")
        policies = {p.policy_id for p in store.list_policies(st)}
        evals = store.list_evaluations(st)
        assert st.status == "done"
        assert len(evals) == len(policies) >= 4 and {e.policy_id for e in evals} == policies
        assert all(0.0 <= e.quality <= 1.0 for e in evals)
        stored_front = [p["policy_id"] for p in front(store, st)]
    finally:
        store.dispose()
    printed = json.loads(r.stdout)["front"]
    assert [p["policy_id"] for p in printed] == stored_front
    assert any(p["on_front"] and not p["baseline"] and p["accuracy"] > 0.9 for p in printed)

    # The controller ran here; the workers ran on the head (in the session of its `ray start`),
    # in the working_dir that the client connection uploaded to the head's temp dir.
    seen = [json.loads(f.read_text()) for f in marks.glob("*.json")]
    assert any(m["sid"] != head.proc.pid and Path(m["cwd"]) == folder.resolve() for m in seen), seen
    on_head = [m for m in seen if m["sid"] == head.proc.pid]
    assert on_head, seen
    shipped = head.session_dir() / "runtime_resources" / "working_dir_files"
    assert all(Path(m["cwd"]).is_relative_to(shipped) for m in on_head), (on_head, shipped)
    # The head's Ray Client server started a server of its own for this client connection.
    assert [p for p in (head.session_dir() / "logs").glob("ray_client_server_*.out")]
    print(f"search over ray:// took {took:.1f} s")


def test_ray_address_without_token_fails_in_one_line(head, tmp_path):
    """A token-protected cluster and no token: one clear line, not Ray's 30 s 'connection timeout'."""
    r = _search(tmp_path, f"sqlite:///{tmp_path / 'study.db'}", "no-token", env=_env(RAY_ADDRESS=head.address))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot connect to Ray at {head.address}: ")
    assert "RAY_AUTH_MODE=token" in last and "RAY_AUTH_TOKEN" in last


def test_ray_client_not_installed_is_one_line(tmp_path):
    """Without grpcio (ray[client]), ray:// names the extra to install; nothing is contacted."""
    code = "import sys; sys.modules['grpc'] = None; from autocomp.cli import main; sys.argv[0] = 'autocomp'; main()"
    r = _search(tmp_path, f"sqlite:///{tmp_path / 'study.db'}", "no-client", env=_env(),
                args=("--address", "ray://127.0.0.1:9"), python=("-c", code))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "error: cannot connect to Ray at ray://127.0.0.1:9: Ray Client (ray://) is not installed: "
        "pip install 'autocomp[client]' (or 'ray[client]')")


def test_client_server_that_never_comes_up_is_retried_then_one_line(tmp_path):
    """A head whose per-connection server never becomes ready in time (its wait set to 0 s): the
    connection is tried again, then one line that carries the head's own reason; nothing stored."""
    from autocomp.workers.session import CLIENT_ATTEMPTS

    h = RayHead(RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S="0")
    try:
        h.wait_ready()
        db = tmp_path / "study.db"
        # A short reconnect grace period: each failed attempt's teardown takes ~10 s, not ~30 s.
        r = _search(tmp_path, f"sqlite:///{db}", "never",
                    env=_env(**h.auth_env, RAY_CLIENT_RECONNECT_GRACE_PERIOD="2"),
                    args=("--address", h.address, "--model", "digits"))
    finally:
        h.stop()
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()
    assert sum("connecting again" in ln for ln in err) == CLIENT_ATTEMPTS - 1, r.stderr
    assert err[-1].startswith(f"error: cannot connect to Ray at {h.address}: Initialization failure from server: ")
    assert "Proxy failed to Connect to backend" in err[-1] and "open to this machine" not in err[-1]
    if db.exists():   # nothing of the study was written
        store = Store(f"sqlite:///{db}")
        try:
            assert store.list_studies() == []
        finally:
            store.dispose()
