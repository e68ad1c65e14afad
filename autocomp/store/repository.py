"""``Store``: the only code that opens SQLAlchemy sessions.

Every write is its own short transaction, so a crashed controller loses at most what was in
flight. Errors that come from the database's reachability or permissions become one-line
:class:`~autocomp.errors.StoreError`s.
"""
from __future__ import annotations

import functools
import hashlib
import math
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlalchemy import create_engine, delete, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from autocomp.errors import StoreError
from autocomp.metrics import Metrics
from autocomp.store.migrate import ensure_schema
from autocomp.store.models import (AuditRow, EvaluationRow, InteractionRow, LayerRow, PolicyRow, ProxyRecordRow,
                                  ScoreRow, StudyRow)

DEFAULT_DB = "sqlite:///autocomp.db"
_LAYER_SCORE = "__layer__"
# Costs with a column of their own; any other cost metric is kept in ``extra["costs"]``.
COST_COLUMNS = ("size", "bitops", "avg_bits", "latency")
_OTHER_COSTS = "costs"


_STUDY_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def check_study_name(name: str) -> str:
    """``name`` if it is a valid study name: letters, digits, ``.``, ``_``, ``-``, at most 200.

    Study names become file and directory names (Ray Tune storage, reports): nothing else is let in.

    Example:
        >>> check_study_name("digits-4bit")
        'digits-4bit'
        >>> check_study_name("../x")
        Traceback (most recent call last):
        ...
        autocomp.errors.StoreError: invalid study name '../x': use letters, digits, '.', '_' and '-' (at most 200)
    """
    if not isinstance(name, str) or not _STUDY_NAME.fullmatch(name) or name in (".", ".."):
        raise StoreError(f"invalid study name {name!r}: use letters, digits, '.', '_' and '-' (at most 200)")
    return name


def normalize_url(db: str | None) -> str:
    """``None`` -> ``$AUTOCOMP_DB`` or ./autocomp.db; a bare path -> a SQLite URL."""
    db = db or os.environ.get("AUTOCOMP_DB") or DEFAULT_DB
    if "://" not in db:
        return f"sqlite:///{Path(db).expanduser()}"
    return db


def _finite(v: Any) -> float | None:
    """A float column value; NaN/inf are kept (``SafeFloat`` stores them on every backend)."""
    return None if v is None else float(v)


def _clean_json(obj: Any) -> Any:
    """JSON columns on PostgreSQL reject NaN/inf: store them as strings that round-trip."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    return obj


_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _restore_json(obj: Any) -> Any:
    """Inverse of :func:`_clean_json`: the strings it wrote for NaN/inf become floats again."""
    if isinstance(obj, str):
        return _NON_FINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: _restore_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore_json(v) for v in obj]
    return obj


@dataclass(frozen=True)
class StudyInfo:
    id: int
    name: str
    status: str
    config: dict
    created_at: Any
    updated_at: Any


def ptq_kind(quantizer: str | None = None) -> str:
    """The evaluation kind a study's PTQ results are stored under: ``ptq`` with ``rtn`` (as every
    study stored before quantizers existed), ``ptq:<spec>`` with another quantizer (a hash of the
    spec past the column's 32 characters), so evaluations of two quantizers never mix. The store
    reads and writes kind ``ptq`` as the study's own (its config's ``quantizer``).

    Example:
        >>> ptq_kind(), ptq_kind("rtn"), ptq_kind("gptq+bias_correction")
        ('ptq', 'ptq', 'ptq:gptq+bias_correction')
    """
    spec = (quantizer or "rtn").strip()
    if spec == "rtn":
        return "ptq"
    kind = f"ptq:{spec}"
    return kind if len(kind) <= 32 else f"ptq:{hashlib.sha1(spec.encode()).hexdigest()[:12]}"


def _kind(study: "StudyInfo", kind: str) -> str:
    return ptq_kind(study.config.get("quantizer")) if kind == "ptq" else kind


@dataclass(frozen=True)
class EvaluationInfo:
    """One stored evaluation: the quality, the costs with a column, and ``extra`` (the rest).

    Example:
        >>> e = EvaluationInfo("abc", "ptq", 0.9, "accuracy", 100.0, None, 4.0, None, {"node": "n1"}, 0.5)
        >>> e.metrics().costs
        {'size': 100.0, 'avg_bits': 4.0}
    """

    policy_id: str
    kind: str
    quality: float
    quality_metric: str
    size: float | None
    bitops: float | None
    avg_bits: float | None
    latency: float | None
    extra: dict
    seconds: float | None

    def metrics(self) -> Metrics:
        """The evaluation as the :class:`~autocomp.metrics.Metrics` that was saved."""
        extras = dict(self.extra)
        costs = {c: getattr(self, c) for c in COST_COLUMNS if getattr(self, c) is not None}
        costs.update(extras.pop(_OTHER_COSTS, None) or {})
        extras.pop("policy_id", None)   # rows written from result dicts repeated it there
        return Metrics(self.policy_id, self.quality, self.quality_metric, costs, extras, self.seconds)


@dataclass(frozen=True)
class PolicyInfo:
    policy_id: str
    source: str
    label: str
    policy: dict
    costs: dict
    info: dict


class Store:
    """A study database at a SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://...``).

    Opening it brings its schema to this autocomp's revision (creating a new database, upgrading
    an older one; see :mod:`autocomp.store.migrate`). ``create=False`` writes nothing: a database
    that would need an upgrade is then an error. ``must_exist=True`` (read-only commands) makes a
    missing SQLite file an error instead of creating an empty one (a typo in ``--db``).
    """

    def __init__(self, url: str | None = None, create: bool = True, must_exist: bool = False):
        self.url = normalize_url(url)
        self.shown_url = _shown(self.url)
        try:
            u = make_url(self.url)
        except ArgumentError as e:
            raise StoreError(f"not a database URL: {self.shown_url!r}") from e
        kwargs: dict[str, Any] = {"future": True, "pool_pre_ping": True}
        busy = 30.0
        if u.get_backend_name() == "sqlite":
            if u.database and u.database != ":memory:":
                # ``file:PATH?mode=ro&uri=true`` (SQLite URI filenames) names PATH.
                path = u.database[len("file:"):] if u.query.get("uri") and u.database.startswith("file:") else u.database
                parent = Path(path).expanduser().resolve().parent
                if not parent.is_dir():
                    raise StoreError(f"cannot open database {self.shown_url}: directory {str(parent)!r} does not exist")
                if must_exist and not Path(path).expanduser().exists():
                    raise StoreError(f"no database file {str(Path(path).expanduser())!r} (check --db)")
            # How long a writer waits for another's lock: ``?timeout=SECONDS`` in the URL, else 30.
            try:
                busy = float(u.query.get("timeout", 30))
            except (TypeError, ValueError) as e:
                raise StoreError(f"cannot open database {self.shown_url}: timeout must be a number of seconds") from e
            u = u.difference_update_query(["timeout"])
            kwargs["connect_args"] = {"timeout": busy}
        elif u.get_backend_name().startswith("postgresql"):
            if u.drivername == "postgresql":
                u = u.set(drivername="postgresql+psycopg")
            kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            self.engine: Engine = create_engine(u, **kwargs)
        except ModuleNotFoundError as e:
            raise StoreError(f"database driver missing for {u.drivername} ({e.name}): pip install 'autocomp[postgres]'") from e
        except SQLAlchemyError as e:
            raise StoreError(f"cannot open database {self.shown_url}: {_first_line(e)}") from e
        if u.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", functools.partial(_sqlite_pragmas, busy_ms=int(busy * 1000)))
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._open_schema(create, busy)

    def _open_schema(self, migrate: bool, busy: float) -> None:
        # Upgrades are serialised by a lock; should a backend still race between "does the
        # table exist?" and "CREATE TABLE", the loser sees "already exists" and checks again.
        for attempt in range(5):
            try:
                ensure_schema(self.engine, self.shown_url, migrate, busy)
                return
            except (OperationalError, IntegrityError, ProgrammingError) as e:
                if attempt == 4 or not _creation_race(e):
                    raise StoreError(f"cannot open database {self.shown_url}: {_first_line(e)}") from e
                time.sleep(0.05 * (attempt + 1))
            except SQLAlchemyError as e:
                raise StoreError(f"cannot open database {self.shown_url}: {_first_line(e)}") from e

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self._sessions()
        try:
            yield s
            s.commit()
        except json.JSONDecodeError as e:  # a JSON column edited or damaged outside autocomp
            s.rollback()
            raise StoreError(f"database {self.shown_url} holds a value that is not valid JSON ({e.msg}): "
                             "the study's stored config or policies were damaged") from e
        except OperationalError as e:
            s.rollback()
            msg = _first_line(e)
            if "database is locked" in msg:
                raise StoreError(f"SQLite database {self.shown_url} is locked by another writer: "
                                 "use a server database (--db postgresql://...) for parallel searches") from e
            raise StoreError(f"database error on {self.shown_url}: {msg}") from e
        except IntegrityError:   # callers tell a duplicate from a failure
            s.rollback()
            raise
        except DatabaseError as e:  # e.g. a file that is not (or no longer) a SQLite database
            s.rollback()
            raise StoreError(f"database error on {self.shown_url}: {_first_line(e)}") from e
        except Exception:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- studies ------------------------------------------------------------------------------
    def open_study(self, name: str, config: dict | None = None) -> tuple[StudyInfo, bool]:
        """Get study ``name`` or create it with ``config``; returns (study, created)."""
        existing = self.get_study(name, missing_ok=True)
        if existing is not None:
            return existing, False
        try:
            with self.session() as s:
                row = StudyRow(name=check_study_name(name), status="created", config=_clean_json(config or {}))
                s.add(row)
                s.flush()
                sid = row.id
        except IntegrityError:  # another process created it first
            return self.get_study(name), False
        return self.get_study_by_id(sid), True

    def get_study(self, name: str, missing_ok: bool = False) -> StudyInfo | None:
        with self.session() as s:
            row = s.scalar(select(StudyRow).where(StudyRow.name == name))
            if row is None:
                if missing_ok:
                    return None
                raise StoreError(f"no study named {name!r} in {self.shown_url}")
            return _study(row)

    def get_study_by_id(self, sid: int) -> StudyInfo:
        with self.session() as s:
            return _study(s.get(StudyRow, sid))

    def set_status(self, study: StudyInfo, status: str) -> None:
        with self.session() as s:
            s.get(StudyRow, study.id).status = status

    def update_config(self, study: StudyInfo, **changes: Any) -> None:
        with self.session() as s:
            row = s.get(StudyRow, study.id)
            row.config = _clean_json({**row.config, **changes})

    def list_studies(self) -> list[dict[str, Any]]:
        """Every study with its counts of layers, policies and evaluations."""
        with self.session() as s:
            counts = {}
            for table, key in ((LayerRow, "layers"), (PolicyRow, "policies"), (EvaluationRow, "evaluations")):
                for sid, n in s.execute(select(table.study_id, func.count()).group_by(table.study_id)):
                    counts.setdefault(sid, {})[key] = n
            out = []
            for row in s.scalars(select(StudyRow).order_by(StudyRow.id)):
                c = counts.get(row.id, {})
                out.append({"name": row.name, "status": row.status, "model": row.config.get("model", ""),
                            "budget": row.config.get("budget_text", ""), "layers": c.get("layers", 0),
                            "policies": c.get("policies", 0), "evaluations": c.get("evaluations", 0),
                            "created_at": row.created_at, "updated_at": row.updated_at})
            return out

    # ---- layers -------------------------------------------------------------------------------
    def save_layers(self, study: StudyInfo, layers: Sequence) -> None:
        with self.session() as s:
            s.execute(delete(LayerRow).where(LayerRow.study_id == study.id))
            for l in layers:
                s.add(LayerRow(study_id=study.id, idx=l.index, name=l.name, info=l.to_dict()))

    def load_layers(self, study: StudyInfo) -> list:
        from autocomp.profile import LayerInfo

        with self.session() as s:
            rows = s.scalars(select(LayerRow).where(LayerRow.study_id == study.id).order_by(LayerRow.idx))
            return [LayerInfo.from_dict(r.info) for r in rows]

    # ---- scores -------------------------------------------------------------------------------
    def save_sensitivity(self, study: StudyInfo, sens) -> None:
        with self.session() as s:
            s.execute(delete(ScoreRow).where(ScoreRow.study_id == study.id, ScoreRow.proxy == sens.proxy))
            for layer, row in sens.omega.items():
                for key, v in row.items():
                    s.add(ScoreRow(study_id=study.id, proxy=sens.proxy, layer=layer, choice=key, value=float(v)))
            for layer, v in sens.layer_scores.items():
                s.add(ScoreRow(study_id=study.id, proxy=sens.proxy, layer=layer, choice=_LAYER_SCORE, value=float(v)))

    def load_sensitivity(self, study: StudyInfo, proxy: str):
        """The stored sensitivity of ``proxy``, or ``None`` when it was never scored."""
        from autocomp.sensitivity import Sensitivity

        with self.session() as s:
            rows = list(s.scalars(select(ScoreRow).where(ScoreRow.study_id == study.id, ScoreRow.proxy == proxy)))
        if not rows:
            return None
        omega: dict[str, dict[str, float]] = {}
        scores: dict[str, float] = {}
        for r in rows:
            if r.choice == _LAYER_SCORE:
                scores[r.layer] = r.value
            else:
                omega.setdefault(r.layer, {})[r.choice] = r.value
        return Sensitivity(proxy, omega, scores)

    def scored_proxies(self, study: StudyInfo) -> list[str]:
        with self.session() as s:
            return sorted(s.scalars(select(ScoreRow.proxy).where(ScoreRow.study_id == study.id).distinct()))

    # ---- policies -----------------------------------------------------------------------------
    def save_policy(self, study: StudyInfo, policy, source: str, label: str = "",
                    costs: dict | None = None, info: dict | None = None) -> bool:
        """Store a policy once (by id); returns False when it was already there."""
        try:
            with self.session() as s:
                exists = s.scalar(select(PolicyRow.id).where(PolicyRow.study_id == study.id,
                                                             PolicyRow.policy_id == policy.id))
                if exists is not None:
                    return False
                s.add(PolicyRow(study_id=study.id, policy_id=policy.id, source=source, label=label,
                                policy=policy.to_dict(), costs=_clean_json(costs or {}),
                                info=_clean_json(info or {})))
            return True
        except IntegrityError:
            return False

    def get_policy(self, study: StudyInfo, policy_id: str) -> PolicyInfo:
        with self.session() as s:
            rows = list(s.scalars(select(PolicyRow).where(PolicyRow.study_id == study.id,
                                                          PolicyRow.policy_id.startswith(policy_id, autoescape=True))))
        if not rows:
            raise StoreError(f"study {study.name!r} has no policy {policy_id!r}")
        if len(rows) > 1:
            raise StoreError(f"policy id prefix {policy_id!r} is ambiguous in study {study.name!r}")
        return _policy(rows[0])

    def list_policies(self, study: StudyInfo) -> list[PolicyInfo]:
        with self.session() as s:
            return [_policy(r) for r in s.scalars(select(PolicyRow).where(PolicyRow.study_id == study.id).order_by(PolicyRow.id))]

    # ---- evaluations --------------------------------------------------------------------------
    def save_evaluation(self, study: StudyInfo, metrics: Metrics, kind: str = "ptq") -> bool:
        """Commit one evaluation now; returns False when that (policy, kind) was already stored.

        Costs with a column (size, bitops, avg_bits, latency) go there; other costs go to
        ``extra["costs"]`` and the extras to ``extra``, so ``EvaluationInfo.metrics()`` gives
        ``metrics`` back.

        Example:
            >>> store = Store("sqlite://")
            >>> study, _ = store.open_study("demo")
            >>> store.save_evaluation(study, Metrics("abc", 0.9, costs={"size": 100.0}))
            True
            >>> store.list_evaluations(study)[0].metrics() == Metrics("abc", 0.9, costs={"size": 100.0})
            True
        """
        costs = dict(metrics.costs)
        columns = {c: _finite(costs.pop(c, None)) for c in COST_COLUMNS}
        extra = {**metrics.extras, _OTHER_COSTS: costs} if costs else dict(metrics.extras)
        row = EvaluationRow(study_id=study.id, policy_id=metrics.policy_id, kind=_kind(study, kind),
                            quality=float(metrics.quality), quality_metric=metrics.quality_metric, **columns,
                            extra=_clean_json(extra), seconds=_finite(metrics.seconds))
        try:
            with self.session() as s:
                s.add(row)
            return True
        except IntegrityError:
            return False

    def update_evaluation(self, study: StudyInfo, policy_id: str, kind: str = "ptq", **fields: Any) -> None:
        """Change a stored evaluation: ``quality``, ``quality_metric`` and the cost columns are
        set; any other field is merged into ``extra`` (e.g. kernel validation figures)."""
        kind = _kind(study, kind)
        with self.session() as s:
            row = s.scalar(select(EvaluationRow).where(EvaluationRow.study_id == study.id,
                                                       EvaluationRow.policy_id == policy_id,
                                                       EvaluationRow.kind == kind))
            if row is None:
                raise StoreError(f"study {study.name!r} has no {kind} evaluation of policy {policy_id!r}")
            extra = dict(row.extra or {})
            for k, v in fields.items():
                if k in ("quality", *COST_COLUMNS):
                    setattr(row, k, _finite(v))
                elif k == "quality_metric":
                    row.quality_metric = str(v)
                else:
                    extra[k] = v
            row.extra = _clean_json(extra)

    def evaluated_ids(self, study: StudyInfo, kind: str = "ptq") -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(EvaluationRow.policy_id).where(EvaluationRow.study_id == study.id,
                                                                       EvaluationRow.kind == _kind(study, kind))))

    def list_evaluations(self, study: StudyInfo, kind: str | None = "ptq") -> list[EvaluationInfo]:
        with self.session() as s:
            q = select(EvaluationRow).where(EvaluationRow.study_id == study.id)
            if kind is not None:
                q = q.where(EvaluationRow.kind == _kind(study, kind))
            return [EvaluationInfo(r.policy_id, r.kind, r.quality, r.quality_metric, r.size, r.bitops, r.avg_bits,
                                   r.latency, _restore_json(dict(r.extra or {})), r.seconds)
                    for r in s.scalars(q.order_by(EvaluationRow.id))]


    # ---- proxy audits -------------------------------------------------------------------------
    def save_audit(self, study: StudyInfo, row: dict, detail: dict | None = None) -> None:
        """Store (replace) one proxy's audit result: proxy, data, spearman, kendall, samples, seconds."""
        data = str(row.get("data", "real"))
        with self.session() as s:
            s.execute(delete(AuditRow).where(AuditRow.study_id == study.id, AuditRow.proxy == row["proxy"],
                                             AuditRow.data == data))
            s.add(AuditRow(study_id=study.id, proxy=row["proxy"], data=data, spearman=_finite(row.get("spearman")),
                           kendall=_finite(row.get("kendall")), band_spearman=_finite(row.get("band_spearman")),
                           samples=int(row["samples"]),
                           seconds=_finite(row.get("seconds")), detail=_clean_json(detail or {})))

    def load_audits(self, study: StudyInfo) -> list[dict[str, Any]]:
        """Stored audit rows of ``study``, best Spearman first (rows without a correlation last)."""
        with self.session() as s:
            rows = list(s.scalars(select(AuditRow).where(AuditRow.study_id == study.id)))
        out = [{"proxy": r.proxy, "data": r.data, "spearman": r.spearman, "kendall": r.kendall,
                "band_spearman": r.band_spearman, "samples": r.samples, "seconds": r.seconds} for r in rows]
        return sorted(out, key=lambda r: -(r["spearman"] if r["spearman"] is not None else -2.0))

    # ---- proxy research (bench primitives, evolution generations) ----------------------------
    def save_record(self, study: StudyInfo, key: str, data: dict) -> None:
        """Store (replace) one JSON value of proxy research under ``key``.

        Example:
            >>> store = Store("sqlite://")
            >>> study, _ = store.open_study("bench")
            >>> store.save_record(study, "evolve/0/1", {"best": 0.5})
            >>> store.load_record(study, "evolve/0/1"), store.record_keys(study, "evolve/"), store.load_record(study, "x")
            ({'best': 0.5}, ['evolve/0/1'], None)
        """
        with self.session() as s:
            s.execute(delete(ProxyRecordRow).where(ProxyRecordRow.study_id == study.id, ProxyRecordRow.key == key))
            s.add(ProxyRecordRow(study_id=study.id, key=key, data=_clean_json(data)))

    def load_record(self, study: StudyInfo, key: str) -> dict | None:
        """The value stored under ``key``, or ``None``."""
        with self.session() as s:
            row = s.scalar(select(ProxyRecordRow).where(ProxyRecordRow.study_id == study.id, ProxyRecordRow.key == key))
            return None if row is None else _restore_json(dict(row.data))

    def record_keys(self, study: StudyInfo, prefix: str = "") -> list[str]:
        """The keys stored for ``study`` that start with ``prefix``, sorted."""
        with self.session() as s:
            keys = s.scalars(select(ProxyRecordRow.key).where(ProxyRecordRow.study_id == study.id))
            return sorted(k for k in keys if k.startswith(prefix))

    # ---- interactions -------------------------------------------------------------------------
    def save_interactions(self, study: StudyInfo, interactions) -> None:
        """Store (replace) one set of measured interactions under its ``key``."""
        it = interactions
        with self.session() as s:
            s.execute(delete(InteractionRow).where(InteractionRow.study_id == study.id, InteractionRow.key == it.key))
            s.add(InteractionRow(study_id=study.id, key=it.key, source=it.source, k=int(it.k),
                                 pairs=sum(len(r) for r in it.pairs.values()), data=_clean_json(it.to_dict())))

    def load_interactions(self, study: StudyInfo, key: str):
        """The stored :class:`~autocomp.interactions.Interactions` under ``key``, or ``None``.

        Example:
            >>> from autocomp.interactions import Interactions
            >>> store = Store("sqlite://")
            >>> study, _ = store.open_study("demo")
            >>> it = Interactions("loss_delta", 1, 2, "accuracy", 0.9, {"a": {"w2a8": 0.8}}, {})
            >>> store.save_interactions(study, it)
            >>> store.load_interactions(study, it.key) == it, store.load_interactions(study, "other")
            (True, None)
        """
        from autocomp.interactions import Interactions

        with self.session() as s:
            row = s.scalar(select(InteractionRow).where(InteractionRow.study_id == study.id, InteractionRow.key == key))
            data = None if row is None else _restore_json(dict(row.data))
        return None if data is None else Interactions.from_dict(data)


def _shown(url: str) -> str:
    """The URL as messages show it: any password masked (never printed, never logged)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: nothing that parses as a password
        return url


def _study(row: StudyRow) -> StudyInfo:
    return StudyInfo(row.id, row.name, row.status, _restore_json(dict(row.config or {})), row.created_at, row.updated_at)


def _policy(r: PolicyRow) -> PolicyInfo:
    return PolicyInfo(r.policy_id, r.source, r.label, dict(r.policy), _restore_json(dict(r.costs or {})),
                      _restore_json(dict(r.info or {})))


def _sqlite_pragmas(dbapi_conn, _record, busy_ms: int = 30000) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    except Exception:
        pass  # read-only or in-memory databases keep their defaults
    finally:
        cur.close()


def _creation_race(e: BaseException) -> bool:
    msg = _first_line(e).lower()
    return "already exists" in msg or "duplicate key" in msg or "database is locked" in msg


def _first_line(e: BaseException) -> str:
    msg = str(getattr(e, "orig", None) or e).strip().splitlines()
    return msg[0] if msg else type(e).__name__
