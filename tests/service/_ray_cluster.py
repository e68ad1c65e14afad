"""A real multi-node Ray cluster on this machine, driven over stdin (run as a subprocess).

``python _ray_cluster.py N`` starts a head node without CPUs (so every actor runs on a worker
node, as on a real cluster) and N worker nodes of one CPU each, with Ray's own
``ray.cluster_utils.Cluster`` (separate raylet processes per node). It prints one JSON line
``{"address": ...}`` and then obeys one command per line, answering one JSON line each:

- ``kill``: SIGKILL the raylet and workers of the oldest worker node (a node dying, not leaving)
- ``add``: start one more worker node
- ``nodes``: the ids of the live worker nodes
- ``quit`` (or end of input): shut the cluster down

It runs in its own process because the rest of the suite shares one local Ray session.
"""
from __future__ import annotations

import json
import sys


def main() -> None:
    from ray.cluster_utils import Cluster

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    node_args = dict(num_cpus=1, object_store_memory=80 * 1024 * 1024)
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, object_store_memory=80 * 1024 * 1024,
                                                                 include_dashboard=False))
    workers = [cluster.add_node(**node_args) for _ in range(n)]
    cluster.wait_for_nodes()

    def say(obj: dict) -> None:
        print(json.dumps(obj), flush=True)

    say({"address": cluster.address, "nodes": [w.node_id for w in workers]})
    try:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "kill":
                node = workers.pop(0)
                cluster.remove_node(node, allow_graceful=False)
                say({"killed": node.node_id})
            elif cmd == "add":
                node = cluster.add_node(**node_args)
                workers.append(node)
                say({"added": node.node_id})
            elif cmd == "nodes":
                say({"nodes": [w.node_id for w in workers]})
            elif cmd == "quit":
                break
            else:
                say({"error": f"unknown command {cmd!r}"})
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
