"""The local Ray that autocomp starts listens on loopback only, and its workers do not run code
lying in the current directory (a ``sitecustomize.py`` there, which Python runs at start-up from
the path a worker starts with; Ray itself appends the driver's directory only later, for imports)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from autocomp.workers.session import local_worker_path

_DRIVER = r"""
import json, os, socket
import ray
from autocomp.workers.session import ensure_ray

ensure_ray(None, num_cpus=1)

@ray.remote
def where():
    import os
    return os.environ.get("PYTHONPATH", "").split(os.pathsep)

paths = ray.get(where.remote())


def tree(root):
    # this process and all its descendants, from /proc (no psutil here)
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    out, todo = {root}, [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in out]
        out.update(kids)
        todo += kids
    return out


inodes = set()
for pid in tree(os.getpid()):
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        pass


def ip(hexaddr):
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


addrs = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and f[9] in inodes:          # 0A: LISTEN
            addrs.add(ip(f[1].split(":")[0]))
print(json.dumps({"listen": sorted(addrs), "worker_path": paths,
                  "node": ray._private.worker.global_worker.node.node_ip_address}))
ray.shutdown()
"""


def test_local_ray_binds_loopback_and_ignores_the_current_directory(tmp_path):
    marker = tmp_path / "sitecustomize-ran"
    (tmp_path / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'a').write('x')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    r = subprocess.run([sys.executable, "-c", _DRIVER], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["node"] == "127.0.0.1"
    assert doc["listen"], "no listening socket found: the check would pass vacuously"
    assert all(ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for ip in doc["listen"]), doc["listen"]
    assert str(tmp_path) not in doc["worker_path"]               # not on the path workers start with
    assert not marker.exists()                                   # so its sitecustomize never ran


def test_worker_path_is_the_controllers_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / ".."))
    entries = local_worker_path().split(os.pathsep)
    assert str(tmp_path) not in entries                          # the cwd is not added
    assert str(Path(tmp_path / "..").resolve()) in [str(Path(e).resolve()) for e in entries]
