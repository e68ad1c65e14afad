"""The architecture part of a policy: which network a quantization-aware NAS candidate is.

An :class:`Architecture` names a model family (``digits-cnn``, ``digits-vit``: the builders live
in :mod:`autocomp.nas_models`), its whole-model settings and one settings mapping per block. It is
a plain value: it never builds anything, and it knows no family's rules (the builder checks
those, so a bad candidate fails in its trial, with its reason). Its :attr:`Architecture.key` is
canonical (sorted settings, numbers in ``%g``) and enters the id of the policy that carries it.

Example:
    >>> a = Architecture.make("digits-cnn", {"stem": 16},
    ...                       [{"op": "conv", "kernel": 3, "width": 1.0}, {"op": "dwsep", "kernel": 5, "width": 0.5}])
    >>> a.key
    'digits-cnn:stem=16/kernel=3,op=conv,width=1|kernel=5,op=dwsep,width=0.5'
    >>> Architecture.from_dict(a.to_dict()) == a, a.depth, a.block(1)["op"]
    (True, 2, 'dwsep')
    >>> Architecture.from_dict({**a.to_dict(), "version": 9})
    Traceback (most recent call last):
    ...
    autocomp.errors.VersionError: Architecture version 9 is newer than this autocomp reads (version 1): upgrade autocomp
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from autocomp.errors import AutocompError
from autocomp.values import check_version

ARCH_VERSION = 1
_NAME = re.compile(r"[A-Za-z_][\w-]*")

Settings = tuple[tuple[str, Any], ...]


def _settings(d: Mapping[str, Any], where: str) -> Settings:
    if not isinstance(d, Mapping):
        raise ValueError(f"architecture {where} must be a mapping of settings, not {type(d).__name__}")
    out = []
    for k, v in sorted(d.items()):
        if not isinstance(k, str) or not _NAME.fullmatch(k):
            raise ValueError(f"architecture {where}: setting name {k!r} is not an identifier")
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError(f"architecture {where}: setting {k!r} must be a number or a word, not {v!r}")
        if isinstance(v, float) and v.is_integer():
            v = int(v)   # 1.0 and 1 are one architecture (JSON round trips must not change the key)
        out.append((k, v))
    return tuple(out)


def _word(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


@dataclass(frozen=True)
class Architecture:
    """A NAS candidate: family, whole-model settings, and the settings of each block.

    Attributes:
        family: the builder family (:func:`autocomp.nas_models.build`).
        params: whole-model settings, sorted by name (e.g. the ViT's ``dim``).
        blocks: one sorted settings tuple per block, in order; the depth is their count.
    """

    family: str
    params: Settings = ()
    blocks: tuple[Settings, ...] = ()
    version: int = field(default=ARCH_VERSION, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not _NAME.fullmatch(self.family):
            raise ValueError(f"architecture family must be a name such as 'digits-cnn', not {self.family!r}")

    @classmethod
    def make(cls, family: str, params: Mapping[str, Any] | None = None,
             blocks: Sequence[Mapping[str, Any]] = ()) -> "Architecture":
        """Build one from plain mappings (settings are sorted, so the order given does not matter)."""
        return cls(family, _settings(params or {}, "params"),
                   tuple(_settings(b, f"block {i}") for i, b in enumerate(blocks)))

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def block(self, i: int) -> dict[str, Any]:
        return dict(self.blocks[i])

    @property
    def key(self) -> str:
        """Canonical text: ``family:params/block|block``; what a policy id hashes."""
        params = ",".join(f"{k}={_word(v)}" for k, v in self.params)
        blocks = "|".join(",".join(f"{k}={_word(v)}" for k, v in b) for b in self.blocks)
        return f"{self.family}:{params}/{blocks}"

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "family": self.family, "params": dict(self.params),
                "blocks": [dict(b) for b in self.blocks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Architecture":
        check_version("Architecture", d, ARCH_VERSION)
        if not isinstance(d.get("blocks", []), list):
            raise ValueError("architecture JSON: 'blocks' must be a list")
        return cls.make(str(d.get("family")), d.get("params") or {}, d.get("blocks") or [])


def check_model_export(policy: Any, fmt: str, needs_model: bool = True) -> None:
    """Refuse, in one line, to export a NAS policy in a format that needs the study's model.

    A NAS policy's weights were trained in its trial and are not stored; the study's model is
    another network. Its ``policy`` JSON (architecture included) is what can be exported.

    Example:
        >>> from autocomp.policy import Choice, Policy
        >>> p = Policy.from_choices({"head": Choice(8, 8)}, arch=Architecture.make("digits-cnn", {}, [{}]))
        >>> check_model_export(p, "checkpoint")                  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        autocomp.errors.AutocompError: policy ... is a NAS candidate (digits-cnn, 1 blocks): ...
    """
    arch = getattr(policy, "arch", None)
    if arch is not None and needs_model:
        raise AutocompError(f"policy {policy.id} is a NAS candidate ({arch.family}, {arch.depth} blocks): its trained "
                            f"weights lived in its trial and are not stored, so --format {fmt} cannot be written; "
                            "export it with --format policy (architecture included)")
