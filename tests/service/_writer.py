"""One writer process of the concurrency tests (run as a script, not imported by pytest).

``python _writer.py URL STUDY WRITER N GO_FILE`` opens (or creates) study STUDY, prints
``ready``, waits until GO_FILE exists (so every writer starts together), then stores N
evaluations of distinct policies and prints one JSON line: how many were stored, and the error
message if a write failed.
"""
from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    url, study_name, writer, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    from autocomp.errors import StoreError
    from autocomp.metrics import Metrics
    from autocomp.store import Store

    store = Store(url)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    stored, error = 0, None
    try:
        study, _ = store.open_study(study_name, {"model": "digits"})  # every writer races to create it
        for i in range(n):
            if store.save_evaluation(study, Metrics(f"w{writer}-p{i}", (writer * n + i) / 1000.0,
                                                    costs={"size": float(i)}, seconds=0.0)):
                stored += 1
    except StoreError as e:
        error = str(e)
    print(json.dumps({"writer": writer, "stored": stored, "error": error}), flush=True)


if __name__ == "__main__":
    main()
