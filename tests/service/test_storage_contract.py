"""The study database contract, run against every storage mode (a SQLite file, PostgreSQL)."""
from __future__ import annotations

import math
import socket
import sqlite3
import threading

import pytest

from autocomp.errors import StoreError
from autocomp.metrics import Metrics
from autocomp.policy import Choice, Policy
from autocomp.proxies import Sensitivity
from autocomp.store import Store


def test_studies_open_list_status_and_config(storage_url):
    store = Store(storage_url)
    study, created = store.open_study("s1", {"model": "digits", "budget_text": "size<=25%"})
    again, created_again = store.open_study("s1", {"model": "other"})

    assert (created, created_again) == (True, False)
    assert again.id == study.id and again.config["model"] == "digits"   # an existing study is not overwritten
    store.set_status(study, "running")
    store.update_config(study, fp32={"size": 1.5e5}, front_costs=["size"])
    got = store.get_study("s1")
    assert got.status == "running"
    assert got.config == {"model": "digits", "budget_text": "size<=25%", "fp32": {"size": 1.5e5}, "front_costs": ["size"]}
    listed = store.list_studies()
    assert [(s["name"], s["status"], s["model"], s["budget"]) for s in listed] == [("s1", "running", "digits", "size<=25%")]
    with pytest.raises(StoreError, match="no study named 'nope'"):
        store.get_study("nope")


def test_layers_scores_policies_and_evaluations_round_trip(storage_url, digits_layers):
    store = Store(storage_url)
    study, _ = store.open_study("s", {"model": "digits"})
    store.save_layers(study, digits_layers)
    names = [l.name for l in digits_layers]
    omega = {n: {"w8a8": 0.001 * i, "w4a8": 0.01 * i, "w2a8": 1.0 + i} for i, n in enumerate(names)}
    sens = Sensitivity("fisher", omega, {n: float(i + 1) for i, n in enumerate(names)})
    store.save_sensitivity(study, sens)
    pol = Policy.from_choices({n: Choice(4 if i % 2 else 8, 8, 0.25 * (i % 3)) for i, n in enumerate(names)})
    assert store.save_policy(study, pol, "ilp", "ilp size<=40KB", {"size": 40960.0}, {"status": "Optimal"})
    assert not store.save_policy(study, pol, "ilp")               # stored once, by id
    saved = Metrics(pol.id, 0.97, costs={"size": 40960.0, "bitops": 2.5e7, "avg_bits": 5.5, "energy": 3.0},
                    extras={"node": "n1"}, seconds=0.12)
    assert store.save_evaluation(study, saved)
    assert not store.save_evaluation(study, Metrics(pol.id, 0.5))   # never two of one (policy, kind)
    store.update_evaluation(study, pol.id, latency=1.25, speedup=2.0)

    other = Store(storage_url)          # a second connection reads what the first committed
    st = other.get_study("s")
    assert other.load_layers(st) == digits_layers
    assert other.load_sensitivity(st, "fisher") == sens
    assert other.load_sensitivity(st, "lrp") is None
    assert other.scored_proxies(st) == ["fisher"]
    info = other.get_policy(st, pol.id[:6])
    assert Policy.from_dict(info.policy) == pol and info.policy_id == pol.id
    assert (info.source, info.label, info.costs, info.info) == ("ilp", "ilp size<=40KB", {"size": 40960.0}, {"status": "Optimal"})
    [ev] = other.list_evaluations(st)
    assert (ev.policy_id, ev.quality, ev.quality_metric, ev.size, ev.bitops, ev.avg_bits, ev.latency, ev.seconds) == \
        (pol.id, 0.97, "accuracy", 40960.0, 2.5e7, 5.5, 1.25, 0.12)
    assert ev.extra == {"node": "n1", "speedup": 2.0, "costs": {"energy": 3.0}}   # a cost without a column
    assert ev.metrics() == Metrics(pol.id, 0.97, costs={**saved.costs, "latency": 1.25},
                                   extras={"node": "n1", "speedup": 2.0}, seconds=0.12)
    assert other.evaluated_ids(st) == {pol.id}
    counts = other.list_studies()[0]
    assert (counts["layers"], counts["policies"], counts["evaluations"]) == (len(names), 1, 1)


def test_inf_and_nan_round_trip(storage_url):
    store = Store(storage_url)
    study, _ = store.open_study("nf", {"model": "digits", "limit": math.inf})
    sens = Sensitivity("quant_mse", {"a": {"w1a8": math.inf, "w2a8": math.nan, "w8a8": -math.inf}}, {"a": math.nan})
    store.save_sensitivity(study, sens)
    pol = Policy.from_choices({"a": Choice(2, 8, 0.0)})
    store.save_policy(study, pol, "ilp", costs={"size": math.inf}, info={"objective": math.nan})
    store.save_evaluation(study, Metrics(pol.id, math.nan, costs={"size": math.inf, "bitops": -math.inf},
                                         extras={"loss": math.nan}))

    other = Store(storage_url)
    st = other.get_study("nf")
    assert st.config["limit"] == math.inf
    got = other.load_sensitivity(st, "quant_mse")
    assert got.omega["a"]["w1a8"] == math.inf and got.omega["a"]["w8a8"] == -math.inf
    assert math.isnan(got.omega["a"]["w2a8"]) and math.isnan(got.layer_scores["a"])
    info = other.get_policy(st, pol.id)
    assert info.costs["size"] == math.inf and math.isnan(info.info["objective"])
    [ev] = other.list_evaluations(st)
    assert math.isnan(ev.quality) and ev.size == math.inf and ev.bitops == -math.inf
    assert math.isnan(ev.extra["loss"])


def test_ten_threads_opening_one_study_get_one_study(storage_url):
    store = Store(storage_url)
    barrier = threading.Barrier(10)
    results, errors = [], []

    def open_it() -> None:
        try:
            barrier.wait()
            results.append(store.open_study("race", {"model": "digits"}))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len({s.id for s, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert [s["name"] for s in store.list_studies()] == ["race"]


def test_locked_sqlite_says_to_use_a_server_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    store = Store(url + "?timeout=0.2")
    study, _ = store.open_study("s", {"model": "digits"})
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")        # another process's long write transaction
    try:
        with pytest.raises(StoreError, match=r"locked by another writer: use a server database \(--db postgresql"):
            store.save_evaluation(study, Metrics("p1", 0.5))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.save_evaluation(study, Metrics("p1", 0.5))      # nothing half-written: it works now
    assert store.evaluated_ids(study) == {"p1"}


def test_unreachable_postgresql_is_one_clear_error():
    with socket.socket() as s:            # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError, match=rf"cannot open database postgresql://nobody@127.0.0.1:{port}/x: ") as e:
        Store(f"postgresql://nobody@127.0.0.1:{port}/x")
    assert "\n" not in str(e.value)


def test_a_lower_is_better_quality_metric_round_trips_and_updates(storage_url):
    store = Store(storage_url)
    study, _ = store.open_study("lm", {"model": "tiny-lm"})
    assert store.save_evaluation(study, Metrics("p1", 12.5, "perplexity", {"size": 10.0}, seconds=1.0), kind="qat")
    store.update_evaluation(study, "p1", kind="qat", quality=11.0, latency=0.5, tokens=128)

    [ev] = Store(storage_url).list_evaluations(store.get_study("lm"), kind="qat")
    assert (ev.quality, ev.quality_metric, ev.size, ev.latency) == (11.0, "perplexity", 10.0, 0.5)
    assert ev.metrics() == Metrics("p1", 11.0, "perplexity", {"size": 10.0, "latency": 0.5}, {"tokens": 128}, 1.0)
    assert store.list_evaluations(study) == []            # kind="ptq" by default
