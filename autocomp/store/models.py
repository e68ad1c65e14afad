"""Tables of the study database. Only :mod:`autocomp.store.repository` uses sessions on them.

A change here needs a migration in ``autocomp/store/migrations/versions`` (a test compares the
migrated schema with these models).
"""
from __future__ import annotations

import datetime as dt

import math
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, UniqueConstraint, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

SCHEMA_VERSION = 1


class SafeFloat(TypeDecorator):
    """A float column that keeps NaN and +-inf on every backend.

    PostgreSQL stores them natively; SQLite turns NaN into NULL (a NOT NULL violation, or a
    silent loss), so there NaN is written as the text ``'nan'`` (SQLite's dynamic typing keeps it)
    and read back as a float. Same DDL as ``Float``: no schema change.
    """

    impl = Float
    cache_ok = True

    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # Replaces (not precedes) Float's own processor, which would turn 'nan' back into NaN.
        def process(value: Any) -> Any:
            if value is None:
                return None
            value = float(value)
            return "nan" if math.isnan(value) else value

        return process

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return float(value) if isinstance(value, str) else value


class Base(DeclarativeBase):
    pass


class StudyRow(Base):
    __tablename__ = "autocomp_studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, index=True)
    status: Mapped[str] = mapped_column(String(32), default="created")
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    schema_version: Mapped[int] = mapped_column(Integer, default=SCHEMA_VERSION)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class LayerRow(Base):
    __tablename__ = "autocomp_layers"
    __table_args__ = (UniqueConstraint("study_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("autocomp_studies.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(500))
    info: Mapped[dict] = mapped_column(JSON)


class ScoreRow(Base):
    __tablename__ = "autocomp_scores"
    __table_args__ = (UniqueConstraint("study_id", "proxy", "layer", "choice"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("autocomp_studies.id", ondelete="CASCADE"), index=True)
    proxy: Mapped[str] = mapped_column(String(200))
    layer: Mapped[str] = mapped_column(String(500))
    choice: Mapped[str] = mapped_column(String(64))   # choice key, or "__layer__" for the layer score
    value: Mapped[float] = mapped_column(SafeFloat)


class PolicyRow(Base):
    __tablename__ = "autocomp_policies"
    __table_args__ = (UniqueConstraint("study_id", "policy_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("autocomp_studies.id", ondelete="CASCADE"), index=True)
    policy_id: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))   # ilp | dp | uniform | optuna | fp32 ...
    label: Mapped[str] = mapped_column(String(200), default="")
    policy: Mapped[dict] = mapped_column(JSON)
    costs: Mapped[dict] = mapped_column(JSON, default=dict)
    info: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class EvaluationRow(Base):
    __tablename__ = "autocomp_evaluations"
    __table_args__ = (UniqueConstraint("study_id", "policy_id", "kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("autocomp_studies.id", ondelete="CASCADE"), index=True)
    policy_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32), default="ptq")   # ptq | qat | kernel ...
    quality: Mapped[float] = mapped_column(SafeFloat)
    # The quality metric's name in autocomp.metrics (it gives the direction); rows written before
    # revision 0002 measured accuracy.
    quality_metric: Mapped[str] = mapped_column(String(64), default="accuracy", server_default="accuracy")
    size: Mapped[float | None] = mapped_column(SafeFloat, nullable=True)
    bitops: Mapped[float | None] = mapped_column(SafeFloat, nullable=True)
    avg_bits: Mapped[float | None] = mapped_column(SafeFloat, nullable=True)
    latency: Mapped[float | None] = mapped_column(SafeFloat, nullable=True)
    extra: Mapped[dict] = mapped_column(JSON, default=dict)
    seconds: Mapped[float | None] = mapped_column(SafeFloat, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AuditRow(Base):
    """One proxy's audit result: rank correlation of predicted degradation vs measured drop."""

    __tablename__ = "autocomp_proxy_audits"
    __table_args__ = (UniqueConstraint("study_id", "proxy", "data"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("autocomp_studies.id", ondelete="CASCADE"), index=True)
    proxy: Mapped[str] = mapped_column(String(200))
    data: Mapped[str] = mapped_column(String(32), default="real")
    spearman: Mapped[float | None] = mapped_column(SafeFloat, nullable=True)
    kendall: Mapped[float | None] = mapped_column(SafeFloat, nullable=True)
    # Spearman among policies of about the same cost (autocomp.bands); rows before 0004: none.
    band_spearman: Mapped[float | None] = mapped_column(SafeFloat, nullable=True)
    samples: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float | None] = mapped_column(SafeFloat, nullable=True)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class InteractionRow(Base):
    """Measured inter-layer interactions (:class:`autocomp.interactions.Interactions`), one row
    per set: which sensitivity ranked the layers, ``k``, and the value itself."""

    __tablename__ = "autocomp_interactions"
    __table_args__ = (UniqueConstraint("study_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("autocomp_studies.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(300))      # Interactions.key: source/k{k}/c{per_layer}
    source: Mapped[str] = mapped_column(String(200))
    k: Mapped[int] = mapped_column(Integer)
    pairs: Mapped[int] = mapped_column(Integer)        # measured (pair, choice pair) entries
    data: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProxyRecordRow(Base):
    """One JSON value of proxy research under a key: a bench's primitives (``primitives``), an
    evolution's population per generation (``evolve/<run>/<generation>``)."""

    __tablename__ = "autocomp_proxy_records"
    __table_args__ = (UniqueConstraint("study_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("autocomp_studies.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(300))
    data: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
