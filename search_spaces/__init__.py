"""Declarative search spaces: which choices each layer may take.

A space is a YAML file::

    name: mixed_precision
    w_bits: [2, 3, 4, 6, 8]      # 1 = binary, 1.58 = ternary, 32 = float
    a_bits: [8]
    prune: [0.0]
    group: [channel, 128]         # weight scales per output channel or per 128 inputs (default channel)
    zero_point: false             # true: asymmetric weights (or [false, true]: both)
    act: [tensor]                 # quantized inputs: calibrated per-tensor ranges, or [tensor, token]
    quantizer: [default]          # who sets the weights: the study's --quantizer, or e.g. [rtn, gptq]
    overrides:                    # first match wins; patterns are fnmatch globs on layer names (a
      - match: "@first"           # tied layer's aliases too), or @first / @last (forward order),
        w_bits: [8]               # @embeddings / @lm_head (by role)
      - match: "classifier.*"
        skip: true                # leave in float
    ties:                         # layers that must share one choice (e.g. residual inputs);
      - ["layer1.0.conv2", "layer1.0.downsample.0"]   # names or globs; overlapping ties merge

Instead of the product of ``w_bits`` x ``a_bits`` x ``prune`` x ``group`` x ``zero_point``, a space
(or an override) may list its choices by key: ``choices: [w4a32g128, w8a32z]``. Embeddings and
LM heads are weight-only: their choices keep the input in float whatever ``a_bits`` says.

``act: token`` (per-token dynamic input ranges, key suffix ``t``: ``w4a8t``) is offered only to
linear layers whose input has a token axis (a transformer's ``[seq, features]``); other layers
take the space's per-tensor choices. ``quantizer`` names the quantizer of each choice (key suffix
``@gptq``; ``default`` is the study's ``--quantizer``), so the allocator picks per layer the one
that will be evaluated; the names are checked against the quantizer registry by the search.

Example:
    >>> from autocomp.search_spaces import load_space
    >>> load_space("mixed_precision").w_bits
    (2, 3, 4, 6, 8)
"""
from __future__ import annotations

import dataclasses
import fnmatch
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import yaml

from autocomp.errors import SearchSpaceError
from autocomp.policy import ACT_MODES, QUANTIZER_NAME, Choice
from autocomp.profile import LayerInfo
from autocomp.quant import FLOAT_BITS, is_float

HERE = Path(__file__).parent
ALLOWED_W_BITS = (1, 1.58, 2, 3, 4, 5, 6, 7, 8, 16, 32)
ALLOWED_A_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32)   # 1: binary inputs (the binary_act space)
_PRODUCT_KEYS = ("w_bits", "a_bits", "prune", "group", "zero_point", "act", "quantizer")
_TOP_KEYS = {"name", "description", *_PRODUCT_KEYS, "choices", "overrides", "ties", "nas"}
_OVR_KEYS = {"match", *_PRODUCT_KEYS, "choices", "skip"}
_ROLE_MATCH = {"@embeddings": "embedding", "@lm_head": "lm_head"}


@dataclass(frozen=True)
class Override:
    match: str
    w_bits: tuple[float, ...] | None = None
    a_bits: tuple[int, ...] | None = None
    prune: tuple[float, ...] | None = None
    skip: bool = False
    group: tuple[int | None, ...] | None = None
    zero_point: tuple[bool, ...] | None = None
    choices: tuple[Choice, ...] | None = None
    act: tuple[str, ...] | None = None
    quantizer: tuple[str | None, ...] | None = None

    def matches(self, layer: LayerInfo, n_layers: int) -> bool:
        if self.match == "@first":
            return layer.index == 0
        if self.match == "@last":
            return layer.index == n_layers - 1
        if self.match in _ROLE_MATCH:
            return _ROLE_MATCH[self.match] in layer.roles
        return any(fnmatch.fnmatchcase(n, self.match) for n in (layer.name, *layer.aliases))


def _product(w, a, p, g, z, act=("tensor",), qz=(None,)) -> list[Choice]:
    out = []
    for wb, ab, pr, gr, zp in itertools.product(w, a, p, g, z):
        if is_float(wb):  # float weights have no scales: one choice, whatever group says
            gr, zp = None, False
        # A float input has no range to take per token; float unpruned weights need no quantizer.
        # Only these new dimensions are de-duplicated: the older ones keep their historical lists.
        variants = [Choice(wb, ab, pr, gr, zp, act="tensor" if is_float(ab) else ac,
                           quantizer=None if is_float(wb) and pr <= 0 else qn)
                    for ac, qn in itertools.product(act, qz)]
        out += list(dict.fromkeys(variants))
    return out


def has_token_axis(layer: LayerInfo) -> bool:
    """Whether per-token input ranges make sense for ``layer``: a linear layer whose input has a
    token (sequence) axis before its features, as in a transformer; not a convolution or an MLP
    on flat features."""
    return layer.role == "linear" and len(layer.in_shape) >= 2


def _weight_only(cs: Sequence[Choice]) -> list[Choice]:
    return list(dict.fromkeys(dataclasses.replace(c, a_bits=FLOAT_BITS, act="tensor") for c in cs))


@dataclass(frozen=True)
class SearchSpace:
    name: str
    w_bits: tuple[float, ...]
    a_bits: tuple[int, ...] = (8,)
    prune: tuple[float, ...] = (0.0,)
    overrides: tuple[Override, ...] = ()
    ties: tuple[tuple[str, ...], ...] = ()
    description: str = ""
    source: dict = field(default_factory=dict, compare=False, hash=False)
    group: tuple[int | None, ...] = (None,)
    zero_point: tuple[bool, ...] = (False,)
    explicit: tuple[Choice, ...] = ()
    act: tuple[str, ...] = ("tensor",)
    quantizer: tuple[str | None, ...] = (None,)
    #: the architecture choices of a NAS space (the ``nas:`` section, see :func:`nas_section`)
    nas: dict | None = field(default=None, hash=False)

    def _base(self) -> list[Choice]:
        if self.explicit:
            return list(self.explicit)
        return _product(self.w_bits, self.a_bits, self.prune, self.group, self.zero_point, self.act, self.quantizer)

    def quantizers(self) -> list[str]:
        """Every quantizer a choice of this space names (overrides included), sorted; empty when
        every layer uses the study's ``--quantizer``.

        Example:
            >>> space_from_dict({"w_bits": [4], "quantizer": ["default", "gptq"]}).quantizers()
            ['gptq']
        """
        names = {c.quantizer for c in self._base()}
        for o in self.overrides:
            names |= {c.quantizer for c in o.choices or ()} | set(o.quantizer or ())
        return sorted(n for n in names if n is not None)

    def choices_for(self, layer: LayerInfo, n_layers: int) -> list[Choice]:
        """Every choice ``layer`` may take (the first matching override narrows the space).

        Embeddings and heads (:attr:`LayerInfo.weight_only`) get their choices with float inputs.
        """
        cs = None
        for o in self.overrides:
            if o.matches(layer, n_layers):
                if o.skip:
                    return [Choice(32, 32, 0.0)]
                if o.choices:
                    cs = list(o.choices)
                else:
                    cs = _product(o.w_bits or self.w_bits, o.a_bits or self.a_bits, o.prune or self.prune,
                                  o.group or self.group, o.zero_point or self.zero_point, o.act or self.act,
                                  o.quantizer or self.quantizer)
                break
        if cs is None:
            cs = self._base()
        if layer.weight_only:
            return _weight_only(cs)
        if not has_token_axis(layer):
            kept = [c for c in cs if not c.per_token]
            if not kept:
                raise SearchSpaceError(f"search space {self.name}: layer {layer.name} ({layer.kind}) has no token axis "
                                       "for per-token inputs, and the space gives it no per-tensor choice")
            cs = kept
        return cs

    def uniform_choice(self, layer: LayerInfo, w_bits: float) -> Choice | None:
        """``layer``'s choice in the uniform ``w_bits`` baseline, built from the space's own
        (override-free) choices: unpruned, 8-bit inputs where the space has them, else its widest
        (float in a weight-only space), its first group and zero-point setting. None when the
        space lists explicit choices and none has ``w_bits``.

        Example:
            >>> sp = load_space("weight_only")
            >>> l = LayerInfo("fc", "Linear", (4, 4), 16, 0, 16, (4,), (4,), 0)
            >>> sp.uniform_choice(l, 4).key, load_space("mixed_precision").uniform_choice(l, 6).key
            ('w4a32g128', 'w6a8')
        """
        pool = [c for c in self._base() if c.w_bits == w_bits and c.prune == 0]
        if not pool:
            if self.explicit:
                return None
            pool = _product((w_bits,), self.a_bits, (0.0,), self.group, self.zero_point)
        a_pref = 8 if any(c.a_bits == 8 for c in pool) else max(c.a_bits for c in pool)
        # per tensor and the study's quantizer where the space has them: the plain baseline
        pool = sorted(pool, key=lambda c: (c.per_token, c.quantizer is not None))
        c = next(c for c in pool if c.a_bits == a_pref)
        return _weight_only([c])[0] if layer.weight_only else c

    def choices(self, layers: Sequence[LayerInfo]) -> dict[str, list[Choice]]:
        return {l.name: self.choices_for(l, len(layers)) for l in layers}

    def tie_groups(self, layers: Sequence[LayerInfo]) -> list[list[str]]:
        """Tied groups resolved to existing layer names (patterns allowed).

        Groups sharing a layer are merged (a tie is an equivalence); singletons are dropped.

        Raises:
            SearchSpaceError: a tie names a layer (or pattern) the model does not have.
        """
        names = [l.name for l in layers]
        groups: list[list[str]] = []
        for i, t in enumerate(self.ties):
            g = []
            for pat in t:
                hit = [n for n in names if fnmatch.fnmatchcase(n, pat)]
                if not hit:
                    raise SearchSpaceError(f"search space {self.name}: ties[{i}] names {pat!r}, which matches no layer "
                                           f"of the model (layers: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")
                g += [n for n in hit if n not in g]
            for other in [o for o in groups if set(o) & set(g)]:
                groups.remove(other)
                g = other + [n for n in g if n not in other]
            if len(g) > 1:
                groups.append(sorted(g, key=names.index))
        return groups

    def resolved_choices(self, layers: Sequence[LayerInfo]) -> "ResolvedChoices":
        """Every layer's choices with the ties applied: the one place ties are resolved.

        Tied layers share one list, the choices every member allows (in the first member's order).

        Raises:
            SearchSpaceError: a tie names no layer, or tied layers have no choice in common.

        Example:
            >>> from autocomp.profile import LayerInfo
            >>> ls = [LayerInfo(n, "Linear", (4, 4), 16, 0, 16, (4,), (4,), i) for i, n in enumerate("abc")]
            >>> sp = space_from_dict({"w_bits": [4, 8], "overrides": [{"match": "a", "w_bits": [8]}],
            ...                       "ties": [["a", "c"]]})
            >>> r = sp.resolved_choices(ls)
            >>> [c.key for c in r.choices["c"]], r.ties, r.units()
            (['w8a8'], [['a', 'c']], [['a', 'c'], ['b']])
        """
        ties = self.tie_groups(layers)
        choices = self.choices(layers)
        for g in ties:
            common = [c for c in choices[g[0]] if all(c in choices[n] for n in g[1:])]
            if not common:
                raise SearchSpaceError(f"search space {self.name}: tied layers {', '.join(g)} have no choice in common")
            for n in g:
                choices[n] = common
        return ResolvedChoices(choices, ties)

    def check_layers(self, layers: Sequence[LayerInfo]) -> None:
        """Check the space against a whole model: every override and tie names one of its layers.

        Raises:
            SearchSpaceError: an override or a tie matches no layer (a typo would be ignored), or
                tied layers have no choice in common.

        Example:
            >>> from autocomp.profile import LayerInfo
            >>> ls = [LayerInfo("fc", "Linear", (4, 4), 16, 0, 16, (4,), (4,), 0)]
            >>> space_from_dict({"w_bits": [4], "overrides": [{"match": "fx", "w_bits": [8]}]}).check_layers(ls)
            Traceback (most recent call last):
            ...
            autocomp.errors.SearchSpaceError: search space <dict>: overrides[0] match 'fx' matches no layer of the model (layers: fc)
        """
        names = [l.name for l in layers]
        for i, o in enumerate(self.overrides):
            if not any(o.matches(l, len(layers)) for l in layers):
                raise SearchSpaceError(f"search space {self.name}: overrides[{i}] match {o.match!r} matches no layer "
                                       f"of the model (layers: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")
        self.resolved_choices(layers)

    def bind(self, layers: Sequence[LayerInfo]) -> "SearchSpace":
        """A copy whose ``@first`` / ``@last`` overrides name this model's layers, so that the
        space means the same when later applied to a subset of them (a proxy task scoring a
        few layers must not take the last of its subset for the model's last layer)."""
        import glob

        ordered = sorted(layers, key=lambda l: l.index)
        if not ordered:
            return self
        concrete = {"@first": glob.escape(ordered[0].name), "@last": glob.escape(ordered[-1].name)}
        ovr = tuple(dataclasses.replace(o, match=concrete.get(o.match, o.match)) for o in self.overrides)
        src = dict(self.source) if self.source else {}
        if src.get("overrides"):
            src["overrides"] = [{**o, "match": concrete.get(o.get("match"), o.get("match"))} for o in src["overrides"]]
        return dataclasses.replace(self, overrides=ovr, source=src)

    def to_dict(self) -> dict[str, Any]:
        if self.source:
            return dict(self.source)
        d: dict[str, Any] = {
            "name": self.name, "w_bits": list(self.w_bits), "a_bits": list(self.a_bits),
            "prune": list(self.prune), "ties": [list(t) for t in self.ties],
            "overrides": [_override_dict(o) for o in self.overrides],
        }
        if self.group != (None,):
            d["group"] = [_group_word(g) for g in self.group]
        if self.zero_point != (False,):
            d["zero_point"] = list(self.zero_point)
        if self.act != ("tensor",):
            d["act"] = list(self.act)
        if self.quantizer != (None,):
            d["quantizer"] = [_quantizer_word(q) for q in self.quantizer]
        if self.explicit:
            d = {k: v for k, v in d.items() if k not in _PRODUCT_KEYS}
            d["choices"] = [c.key for c in self.explicit]
        return d


def _group_word(g: int | None) -> int | str:
    return "channel" if g is None else g


def _quantizer_word(q: str | None) -> str:
    return "default" if q is None else q


def _override_dict(o: Override) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in vars(o).items():
        if v in (None, False):
            continue
        if k == "group":
            v = [_group_word(g) for g in v]
        elif k == "choices":
            v = [c.key for c in v]
        elif k == "quantizer":
            v = [_quantizer_word(q) for q in v]
        elif isinstance(v, tuple):
            v = list(v)
        d[k] = v
    return d


class ResolvedChoices(NamedTuple):
    """:meth:`SearchSpace.resolved_choices`: per layer (model order) its choices, and the tie groups."""

    choices: dict[str, list[Choice]]
    ties: list[list[str]]

    def units(self) -> list[list[str]]:
        """What takes one choice: each layer alone or with its tie group, in model order."""
        return tie_units(list(self.choices), self.ties)


def tie_units(names: Sequence[str], ties: Sequence[Sequence[str]]) -> list[list[str]]:
    """Each of ``names`` alone or with its tie group; a group stands where its first member does.

    Example:
        >>> tie_units(["a", "b", "c"], [["c", "a"]])
        [['c', 'a'], ['b']]
    """
    group_of = {n: list(g) for g in ties for n in g}
    units: list[list[str]] = []
    seen: set[str] = set()
    for n in names:
        if n not in seen:
            g = group_of.get(n, [n])
            seen.update(g)
            units.append(g)
    return units


def _bits_list(v: Any, key: str, allowed: Sequence[float], where: str) -> tuple:
    if not isinstance(v, list) or not v:
        raise SearchSpaceError(f"search space {where}: {key!r} must be a non-empty list")
    out = []
    for b in v:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not any(abs(b - a) < 1e-9 for a in allowed):
            raise SearchSpaceError(f"search space {where}: {key!r} has {b!r}; allowed: {', '.join(map(str, allowed))}")
        out.append(int(b) if float(b).is_integer() else float(b))
    return tuple(sorted(set(out)))


def _prune_list(v: Any, where: str, key: str = "prune") -> tuple:
    if not isinstance(v, list) or not v:
        raise SearchSpaceError(f"search space {where}: {key!r} must be a non-empty list")
    for r in v:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
            raise SearchSpaceError(f"search space {where}: {key!r} has {r!r}; ratios lie in [0, 1)")
    return tuple(sorted({float(r) for r in v}))


def _group_list(v: Any, where: str, key: str = "group") -> tuple:
    items = v if isinstance(v, list) else [v]
    if not items:
        raise SearchSpaceError(f"search space {where}: {key!r} must be a non-empty list")
    out: list[int | None] = []
    for g in items:
        if g == "channel" or g is None:
            g = None
        elif isinstance(g, bool) or not isinstance(g, int) or g < 2:
            raise SearchSpaceError(f"search space {where}: {key!r} has {g!r}; a group is 'channel' or an integer "
                                   "of at least 2 (input elements per scale)")
        if g not in out:
            out.append(g)
    return tuple(out)


def _zp_list(v: Any, where: str, key: str = "zero_point") -> tuple:
    items = v if isinstance(v, list) else [v]
    if not items or not all(isinstance(b, bool) for b in items):
        raise SearchSpaceError(f"search space {where}: {key!r} must be true, false or a list of them")
    return tuple(dict.fromkeys(items))


def _act_list(v: Any, where: str, key: str = "act") -> tuple:
    items = v if isinstance(v, list) else [v]
    if not items or not all(isinstance(a, str) and a in ACT_MODES for a in items):
        bad = next((a for a in items if not (isinstance(a, str) and a in ACT_MODES)), None)
        raise SearchSpaceError(f"search space {where}: {key!r} has {bad!r}; input ranges are "
                               f"{' or '.join(ACT_MODES)} (or a list of them)")
    return tuple(dict.fromkeys(items))


def _quantizer_list(v: Any, where: str, key: str = "quantizer") -> tuple:
    items = v if isinstance(v, list) else [v]
    bad = next((q for q in items if not (isinstance(q, str) and (q == "default" or QUANTIZER_NAME.fullmatch(q)))), None)
    if not items or bad is not None:
        raise SearchSpaceError(f"search space {where}: {key!r} has {bad!r}; a quantizer is 'default' (the study's "
                               "--quantizer) or a registered name such as rtn or gptq")
    return tuple(dict.fromkeys(None if q == "default" else q for q in items))


def _choice_list(v: Any, where: str, key: str = "choices") -> tuple:
    if not isinstance(v, list) or not v:
        raise SearchSpaceError(f"search space {where}: {key!r} must be a non-empty list of choice keys (e.g. w4a32g128)")
    out = []
    for k in v:
        try:
            c = Choice.from_key(str(k)) if isinstance(k, str) else None
        except ValueError:
            c = None
        if c is None:
            raise SearchSpaceError(f"search space {where}: {key!r} has {k!r}; a choice key looks like w4a8, "
                                   "w4a32g128 or w8a32z")
        _bits_list([c.w_bits], f"{key}[{k}].w_bits", ALLOWED_W_BITS, where)
        _bits_list([c.a_bits], f"{key}[{k}].a_bits", ALLOWED_A_BITS, where)
        _prune_list([c.prune], where, f"{key}[{k}].prune")
        if c.group is not None:
            _group_list([c.group], where, f"{key}[{k}].group")
        _check_zp(where, key, (c.w_bits,), (c.zero_point,))
        out.append(c)
    return tuple(dict.fromkeys(out))


def _check_zp(where: str, key: str, w_bits: Sequence[float], zps: Sequence[bool]) -> None:
    if any(zps) and any(w < 2 for w in w_bits):
        raise SearchSpaceError(f"search space {where}: {key!r} asks for zero points with binary or ternary "
                               "weights; zero points need w_bits of 2 or more")


def space_from_dict(d: Mapping[str, Any], where: str = "<dict>") -> SearchSpace:
    """Validate and build a space; errors name the bad key."""
    if not isinstance(d, Mapping):
        raise SearchSpaceError(f"search space {where}: expected a mapping at the top level")
    unknown = set(d) - _TOP_KEYS
    if unknown:
        raise SearchSpaceError(f"search space {where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})")
    if "choices" in d and set(d) & set(_PRODUCT_KEYS):
        raise SearchSpaceError(f"search space {where}: 'choices' lists the choices itself; it cannot be combined "
                               f"with {sorted(set(d) & set(_PRODUCT_KEYS))[0]!r}")
    if "w_bits" not in d and "choices" not in d:
        raise SearchSpaceError(f"search space {where}: missing key 'w_bits' (or 'choices')")
    explicit = _choice_list(d["choices"], where) if "choices" in d else ()
    for key in ("name", "description"):
        if key in d and not isinstance(d[key], str):
            raise SearchSpaceError(f"search space {where}: {key!r} must be a string")
    if not isinstance(d.get("overrides") or [], list):
        raise SearchSpaceError(f"search space {where}: 'overrides' must be a list of mappings with a 'match' key")
    if not isinstance(d.get("ties") or [], list):
        raise SearchSpaceError(f"search space {where}: 'ties' must be a list of lists of layer names")
    overrides = []
    for i, o in enumerate(d.get("overrides") or []):
        if not isinstance(o, Mapping) or "match" not in o:
            raise SearchSpaceError(f"search space {where}: overrides[{i}] needs a 'match' key")
        bad = set(o) - _OVR_KEYS
        if bad:
            raise SearchSpaceError(f"search space {where}: overrides[{i}] has unknown key {sorted(bad)[0]!r} "
                                   f"(known: {', '.join(sorted(_OVR_KEYS))})")
        if not isinstance(o["match"], str) or not o["match"]:
            raise SearchSpaceError(f"search space {where}: overrides[{i}].match must be a layer name, a glob, "
                                   "@first, @last, @embeddings or @lm_head")
        if "skip" in o and not isinstance(o["skip"], bool):
            raise SearchSpaceError(f"search space {where}: overrides[{i}].skip must be true or false")
        if o.get("skip") and set(o) & {*_PRODUCT_KEYS, "choices"}:
            raise SearchSpaceError(f"search space {where}: overrides[{i}] sets skip together with bits or prune; "
                                   "a skipped layer stays in float")
        if "choices" in o and set(o) & set(_PRODUCT_KEYS):
            raise SearchSpaceError(f"search space {where}: overrides[{i}] combines 'choices' with "
                                   f"{sorted(set(o) & set(_PRODUCT_KEYS))[0]!r}")
        if explicit and set(o) & set(_PRODUCT_KEYS):
            raise SearchSpaceError(f"search space {where}: overrides[{i}] sets {sorted(set(o) & set(_PRODUCT_KEYS))[0]!r} "
                                   "but the space lists its 'choices'; give the override its own 'choices'")
        ow = _bits_list(o["w_bits"], f"overrides[{i}].w_bits", ALLOWED_W_BITS, where) if "w_bits" in o else None
        oz = _zp_list(o["zero_point"], where, f"overrides[{i}].zero_point") if "zero_point" in o else None
        _check_zp(where, f"overrides[{i}]", ow or _bits_list(d.get("w_bits", [8]), "w_bits", ALLOWED_W_BITS, where),
                  oz or _zp_list(d.get("zero_point", False), where))
        overrides.append(Override(
            match=str(o["match"]),
            w_bits=_bits_list(o["w_bits"], f"overrides[{i}].w_bits", ALLOWED_W_BITS, where) if "w_bits" in o else None,
            a_bits=_bits_list(o["a_bits"], f"overrides[{i}].a_bits", ALLOWED_A_BITS, where) if "a_bits" in o else None,
            prune=_prune_list(o["prune"], where, f"overrides[{i}].prune") if "prune" in o else None,
            skip=bool(o.get("skip", False)),
            group=_group_list(o["group"], where, f"overrides[{i}].group") if "group" in o else None,
            zero_point=oz,
            choices=_choice_list(o["choices"], where, f"overrides[{i}].choices") if "choices" in o else None,
            act=_act_list(o["act"], where, f"overrides[{i}].act") if "act" in o else None,
            quantizer=_quantizer_list(o["quantizer"], where, f"overrides[{i}].quantizer") if "quantizer" in o else None,
        ))
    ties = []
    for i, t in enumerate(d.get("ties") or []):
        if not isinstance(t, list) or not t or not all(isinstance(x, str) for x in t) or \
                (len(t) < 2 and not any(ch in t[0] for ch in "*?[")):
            raise SearchSpaceError(f"search space {where}: ties[{i}] must be a list of at least two layer names "
                                   "(or one glob pattern matching several)")
        ties.append(tuple(t))
    if explicit:  # the product fields describe the listed choices (what they span)
        w_bits = tuple(sorted({c.w_bits for c in explicit}))
        a_bits = tuple(sorted({c.a_bits for c in explicit}))
        prune = tuple(sorted({c.prune for c in explicit}))
        group = tuple(dict.fromkeys(c.group for c in explicit))
        zps = tuple(dict.fromkeys(c.zero_point for c in explicit))
        act = tuple(dict.fromkeys(c.act for c in explicit))
        qz = tuple(dict.fromkeys(c.quantizer for c in explicit))
    else:
        w_bits = _bits_list(d["w_bits"], "w_bits", ALLOWED_W_BITS, where)
        a_bits = _bits_list(d.get("a_bits", [8]), "a_bits", ALLOWED_A_BITS, where)
        prune = _prune_list(d.get("prune", [0.0]), where)
        group = _group_list(d.get("group", ["channel"]), where)
        zps = _zp_list(d.get("zero_point", False), where)
        _check_zp(where, "zero_point", w_bits, zps)
        act = _act_list(d.get("act", "tensor"), where)
        qz = _quantizer_list(d.get("quantizer", "default"), where)
    return SearchSpace(
        name=str(d.get("name", where)), w_bits=w_bits, a_bits=a_bits, prune=prune,
        overrides=tuple(overrides), ties=tuple(ties),
        description=str(d.get("description", "")), source=dict(d),
        group=group, zero_point=zps, explicit=explicit, act=act, quantizer=qz,
        nas=nas_section(d["nas"], where) if "nas" in d else None,
    )


def nas_section(v: Any, where: str = "<dict>") -> dict:
    """Validate a space's ``nas:`` section: the architecture choices of quantization-aware NAS::

        nas:
          family: digits-cnn        # the builder (autocomp.nas_models)
          depth: [2, 3, 4]          # number of blocks
          stem: [8, 16]             # any other key: a whole-model setting's choices
          block:                    # each block's settings' choices
            op: [conv, dwsep]
            kernel: [3, 5]

    Only the form is checked here (lists of numbers or words); the family's builder judges the
    values, so an architecture it cannot build fails in its trial with the builder's reason.

    Example:
        >>> nas_section({"family": "digits-cnn", "depth": [2, 3], "block": {"op": ["conv"]}})["depth"]
        [2, 3]
        >>> nas_section({"family": "digits-cnn", "depth": []})
        Traceback (most recent call last):
        ...
        autocomp.errors.SearchSpaceError: search space <dict>: 'nas.depth' must be a non-empty list of block counts (integers >= 1)
    """
    if not isinstance(v, Mapping):
        raise SearchSpaceError(f"search space {where}: 'nas' must be a mapping with 'family', 'depth' and 'block'")
    fam = v.get("family")
    if not isinstance(fam, str) or not fam:
        raise SearchSpaceError(f"search space {where}: 'nas.family' must name an architecture family (e.g. digits-cnn)")
    depth = v.get("depth")
    if not isinstance(depth, list) or not depth or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                                           for x in depth):
        raise SearchSpaceError(f"search space {where}: 'nas.depth' must be a non-empty list of block counts (integers >= 1)")
    block = v.get("block", {})
    if not isinstance(block, Mapping):
        raise SearchSpaceError(f"search space {where}: 'nas.block' must map block settings to lists of choices")
    out: dict = {"family": fam, "depth": sorted(set(depth)), "params": {}, "block": {}}
    for part, items in (("params", {k: x for k, x in v.items() if k not in ("family", "depth", "block")}),
                        ("block", block)):
        for k, opts in items.items():
            key = f"nas.{k}" if part == "params" else f"nas.block.{k}"
            if not isinstance(k, str) or not k.isidentifier() or k == "bits":
                raise SearchSpaceError(f"search space {where}: {key!r} is not a setting name (bits come from w_bits)")
            if not isinstance(opts, list) or not opts or not all(
                    isinstance(x, (int, float, str)) and not isinstance(x, bool) for x in opts):
                raise SearchSpaceError(f"search space {where}: {key!r} must be a non-empty list of numbers or words")
            out[part][k] = list(dict.fromkeys(opts))
    return out


def builtin_spaces() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def load_space(name_or_path: str) -> SearchSpace:
    """A built-in space by name (``mixed_precision``, ...) or a YAML file path."""
    p = Path(name_or_path)
    if not p.suffix and (HERE / f"{name_or_path}.yaml").exists():
        p = HERE / f"{name_or_path}.yaml"
    if not p.is_file():
        raise SearchSpaceError(f"unknown search space {name_or_path!r}: use a built-in ({', '.join(builtin_spaces())}) or a YAML file")
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise SearchSpaceError(f"search space {p}: not UTF-8 text (byte {e.start})") from e
    except OSError as e:
        raise SearchSpaceError(f"cannot read search space {p}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise SearchSpaceError(f"search space {p}: not valid YAML ({str(e).splitlines()[0]})") from e
    return space_from_dict(d, where=str(p.name))
