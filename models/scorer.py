"""The lean serving scorer: fraud probabilities with neither xgboost nor scikit-learn.

A serving Lambda pays over a second to import either library and ~300 us per row for
``inplace_predict``; this module needs only the standard library (no numpy) and scores one
row of the baseline XGBoost model in ~10-15 us (p50). It reproduces the training library's
probabilities to 1e-6 (``bench/scorer.py`` measures it; ``save_artifact`` checks it).

Every family goes through the same two steps: the scaler (``z = (x - mean) / scale`` in
float64, exactly as ``StandardScaler.transform`` computes it), then the model:

- :class:`LinearModel`: ``sigmoid(intercept + coef . z)`` (logistic regression);
- :class:`TreeEnsemble`: XGBoost's ``sigmoid(base_margin + sum of leaves)``, or a
  scikit-learn forest's (or single tree's) mean of class-1 probabilities.

Trees are normalized to one split rule, *go left iff* ``z < bound`` (a float64), NaN taking
the node's missing-value direction. The libraries compare in float32 (XGBoost:
``float32(z) < threshold``; scikit-learn: ``float32(z) <= threshold``, its thresholds
stored as float64); :func:`xgboost_bounds` and :func:`sklearn_bounds` turn thresholds into
the float64 bounds that take the same branch for every input, so no row pays a float32
conversion and no branch flips near a threshold.

Small ensembles become generated straight-line Python (one nested conditional expression
per tree, the scaler folded exactly into each bound by :func:`fold_scaler`), compiled once
at load; large ones (a default-depth random forest would be tens of MB of source) are
walked as arrays. The generator reads only typed numbers from ``array`` arrays (ints as ``int``,
floats through ``repr(float())``), never a string of the artifact, and the generated code
runs without builtins.

Example::

    scorer = build_scorer(ensemble, scaler_mean=[...], scaler_scale=[...])
    p = scorer.score([57.2, 0.0, 1.0, ...])   # raw features, in the manifest's order
"""

from __future__ import annotations

import marshal
import math
import os
import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Final, Literal, Protocol

from models.errors import RtmlError

Aggregation = Literal["sum_sigmoid", "mean"]
"""How tree outputs combine: XGBoost's logistic margin, or scikit-learn's mean probability."""

CODEGEN_MAX_NODES: Final = 40_000
"""Above this many nodes the ensemble is walked as arrays: the source would pass ~1 MB and
its compile time (~10 ms per 1,000 nodes) the cold-start budget."""
CODEGEN_MAX_DEPTH: Final = 90
"""Python's tokenizer allows 200 nested parentheses; deeper trees are walked as arrays."""

GENERATOR_VERSION: Final = 1
"""Bumped whenever the generated code changes, so a cached code object is never stale."""


class ScorerError(RtmlError, ValueError):
    """The model parameters cannot make a valid scorer (a bug or a tampered artifact)."""


class Scorer(Protocol):
    """Raw ordered features in, fraud probability out."""

    @property
    def n_features(self) -> int:
        """How many inputs a row has."""
        ...

    @property
    def kind(self) -> str:
        """``linear``, ``codegen`` or ``array``: how the scorer computes (for reports)."""
        ...

    def score(self, row: Sequence[float]) -> float:
        """The probability of one row: raw (unscaled) features in the manifest's order."""
        ...

    def score_batch(self, rows: Iterable[Sequence[float]]) -> list[float]:
        """Probabilities of many rows, in order."""
        ...


# --- float32 semantics, computed once per threshold -------------------------------------------

_SIGN: Final = 0x8000_0000
_HALF_ULP_OF_F32_MAX: Final = 2.0**103
_F32_MAX: Final = 3.4028234663852886e38


def _as_f32(values: Iterable[float]) -> array[float]:
    """Round to float32 in C (round to nearest even; overflow gives +-inf)."""
    try:
        return array("f", values)
    except TypeError:
        raise ScorerError("expected numbers") from None


def _bits(values: array[float]) -> array[int]:
    out = array("I")
    out.frombytes(values.tobytes())
    return out


def _from_bits(bits: Iterable[int]) -> array[float]:
    out = array("f")
    out.frombytes(array("I", bits).tobytes())
    return out


def _next_up(bits: array[int]) -> array[float]:
    """The next float32 above each float32 below +inf (given by its bits)."""
    return _from_bits(1 if b & ~_SIGN == 0 else (b + 1 if b < _SIGN else b - 1) for b in bits)


def _next_down(bits: array[int]) -> array[float]:
    """The next float32 below each finite float32 (given by its bits)."""
    return _from_bits(
        _SIGN | 1 if b & ~_SIGN == 0 else (b - 1 if b < _SIGN else b + 1) for b in bits
    )


def f32_le_bounds(values: Sequence[float]) -> array[float]:
    """For each float32 ``v < inf``: the float64 ``b`` with ``x < b`` iff ``float32(x) <= v``.

    Rounding to float32 is monotonic, so the ``x`` rounding to at most ``v`` are those
    below the midpoint between ``v`` and the next float32, plus the midpoint itself when the
    tie goes to ``v`` (ties go to the even bit pattern). The midpoint is exact in float64.
    """
    values = values if isinstance(values, array) and values.typecode == "f" else _as_f32(values)
    if not all(v < math.inf for v in values):  # -inf is fine: float32(x) <= -inf has a bound
        raise ScorerError("threshold outside the float32 range")
    bits = _bits(values)
    out = array("d")
    for v, up, b in zip(values, _next_up(bits), bits, strict=True):
        if v == -math.inf:  # the next float32 up is -max; the tie rounds to -inf (even)
            mid = -_F32_MAX - _HALF_ULP_OF_F32_MAX
        else:
            mid = v + _HALF_ULP_OF_F32_MAX if math.isinf(up) else (v + up) / 2.0
        out.append(math.nextafter(mid, math.inf) if b & 1 == 0 else mid)
    return out


def xgboost_bounds(thresholds: Sequence[float]) -> array[float]:
    """XGBoost goes left iff ``float32(x) < t``, ``t`` a float32: the float64 bounds.

    ``thresholds`` may be float32 values or their shortest decimals as XGBoost's JSON
    writes them; both round to the same float32.
    """
    t32 = _as_f32(thresholds)
    if not all(math.isfinite(v) for v in t32):
        raise ScorerError("XGBoost threshold is not finite")
    return f32_le_bounds(_next_down(_bits(t32)))


def sklearn_bounds(thresholds: Sequence[float]) -> array[float]:
    """scikit-learn goes left iff ``float32(x) <= t`` (``t`` a float64): the float64 bounds."""
    t64 = array("d", thresholds)
    if not all(math.isfinite(v) for v in t64):
        raise ScorerError("scikit-learn threshold is not finite")
    rounded = _as_f32(t64)
    above = [i for i, (r, t) in enumerate(zip(rounded, t64, strict=True)) if r > t]
    if above:  # rounded up: the largest float32 <= t is the one below
        below = _next_down(_bits(array("f", (rounded[i] for i in above))))
        for i, v in zip(above, below, strict=True):
            rounded[i] = v
    return f32_le_bounds(rounded)


_MAX: Final = sys.float_info.max
_D: Final = struct.Struct("<d")
_Q: Final = struct.Struct("<q")


def _ordinal(x: float) -> int:
    """float64 -> int with the same order (bisection over floats)."""
    (i,) = _Q.unpack(_D.pack(x))
    return int(i) if i >= 0 else -(int(i) & 0x7FFF_FFFF_FFFF_FFFF)


def _from_ordinal(i: int) -> float:
    (x,) = _D.unpack(_Q.pack(i if i >= 0 else (-i) | -0x8000_0000_0000_0000))
    return float(x)


def fold_scaler(bound: float, mean: float, scale: float) -> float:
    """The raw-input bound ``c`` with ``x < c`` iff ``(x - mean) / scale < bound``, for all x.

    Both float64 operations are monotonic, so the inputs that pass form a down-set and one
    float64 bound is exact: the generated code then compares raw inputs and never scales.
    """

    def passes(x: float) -> bool:
        return (x - mean) / scale < bound

    if passes(_MAX):
        return math.inf
    if not passes(-_MAX):
        return -_MAX
    guess = min(max(mean + bound * scale, -_MAX), _MAX)
    for _ in range(16):  # the guess is usually within an ulp or two
        if passes(guess):
            guess = math.nextafter(guess, math.inf)
        elif passes(down := math.nextafter(guess, -math.inf)):
            return guess
        else:
            guess = down
    lo, hi = _ordinal(-_MAX), _ordinal(_MAX)  # passes(lo), not passes(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if passes(_from_ordinal(mid)) else (lo, mid)
    return _from_ordinal(hi)


# --- the normalized model ---------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """One binary tree as typed arrays; node ``i`` is a leaf iff ``left[i] == -1``.

    At an internal node: go to ``left[i]`` iff ``z[feature[i]] < bound[i]``, or if that
    value is NaN and ``missing_left[i]``; else to ``right[i]``. At a leaf: ``value[i]``.
    Nodes unreachable from the root (XGBoost keeps pruned ones) are never visited.
    """

    left: array[int]
    right: array[int]
    feature: array[int]
    bound: array[float]
    missing_left: bytes
    value: array[float]

    @classmethod
    def of(
        cls,
        *,
        left: Iterable[int],
        right: Iterable[int],
        feature: Iterable[int],
        bound: Iterable[float],
        missing_left: Iterable[bool],
        value: Iterable[float],
    ) -> Tree:
        """Typed copies: a string or a float where an int belongs is a ScorerError."""
        try:
            return cls(
                left=array("q", left),
                right=array("q", right),
                feature=array("q", feature),
                bound=array("d", bound),
                missing_left=bytes(1 if m else 0 for m in missing_left),
                value=array("d", value),
            )
        except (TypeError, OverflowError):
            raise ScorerError("tree arrays must hold numbers of the right kind") from None

    def validate(self, n_features: int) -> tuple[int, int]:
        """Check shape and ranges from the root (no cycle, no shared node): (depth, nodes)."""
        n = len(self.left)
        sizes = (self.right, self.feature, self.bound, self.missing_left, self.value)
        if n == 0 or any(len(a) != n for a in sizes):
            raise ScorerError("tree arrays are empty or of different lengths")
        left, right, feature = self.left.tolist(), self.right.tolist(), self.feature.tolist()
        bound, value = self.bound.tolist(), self.value.tolist()
        seen = bytearray(n)
        stack = [(0, 0)]
        deepest = visited = 0
        while stack:
            i, depth = stack.pop()
            if seen[i]:
                raise ScorerError(f"node {i} is reached twice: not a tree")
            seen[i] = 1
            visited += 1
            deepest = max(deepest, depth)
            if left[i] == -1:
                if right[i] != -1 or not math.isfinite(value[i]):
                    raise ScorerError(f"leaf {i} is malformed")
                continue
            if not 0 <= feature[i] < n_features:
                raise ScorerError(f"node {i} splits on feature {feature[i]} of {n_features}")
            if math.isnan(bound[i]):
                raise ScorerError(f"node {i} has a NaN bound")
            if not (0 <= left[i] < n and 0 <= right[i] < n):
                raise ScorerError(f"node {i} has children out of range")
            stack.append((right[i], depth + 1))
            stack.append((left[i], depth + 1))
        return deepest, visited


@dataclass(frozen=True)
class TreeEnsemble:
    """Trees and how their outputs combine into a probability."""

    trees: tuple[Tree, ...]
    aggregation: Aggregation
    base_margin: float = 0.0


@dataclass(frozen=True)
class LinearModel:
    """Logistic regression on the scaled features."""

    coef: tuple[float, ...]
    intercept: float


Model = TreeEnsemble | LinearModel


def sigmoid(margin: float) -> float:
    """The logistic function, without overflow for large negative margins."""
    if margin >= 0.0:
        return 1.0 / (1.0 + math.exp(-margin))
    e = math.exp(margin)
    return e / (1.0 + e)


def _scaler(
    mean: Sequence[float], scale: Sequence[float], n: int
) -> tuple[tuple[float, float], ...]:
    if len(mean) != n or len(scale) != n:
        raise ScorerError(f"scaler has {len(mean)}/{len(scale)} entries for {n} features")
    pairs = tuple((float(m), float(s)) for m, s in zip(mean, scale, strict=True))
    if not all(math.isfinite(m) and math.isfinite(s) and s > 0.0 for m, s in pairs):
        raise ScorerError("scaler entries must be finite, scales > 0")
    return pairs


# --- linear ---------------------------------------------------------------------------------


class LinearScorer:
    """``sigmoid(intercept + coef . z)``: about 3 us per row for 15 features."""

    kind = "linear"

    def __init__(self, model: LinearModel, mean: Sequence[float], scale: Sequence[float]) -> None:
        self.n_features = len(model.coef)
        pairs = _scaler(mean, scale, self.n_features)
        if not all(math.isfinite(c) for c in (*model.coef, model.intercept)):
            raise ScorerError("linear model has non-finite coefficients")
        self._terms = tuple((m, s, float(c)) for (m, s), c in zip(pairs, model.coef, strict=True))
        self._intercept = float(model.intercept)

    def score(self, row: Sequence[float]) -> float:
        """One row's probability (same summation as a dot product, to ~1e-16)."""
        if len(row) != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {len(row)}")
        margin = self._intercept
        for x, (m, s, c) in zip(row, self._terms, strict=True):
            margin += c * ((x - m) / s)
        return sigmoid(margin)

    def score_batch(self, rows: Iterable[Sequence[float]]) -> list[float]:
        """Many rows' probabilities."""
        return [self.score(row) for row in rows]


# --- trees: array walking ---------------------------------------------------------------------


class ArrayTreeScorer:
    """Walks each tree's arrays: no code generation, compact, any size (~0.1 us per node)."""

    kind = "array"

    def __init__(self, ensemble: TreeEnsemble, pairs: tuple[tuple[float, float], ...]) -> None:
        self.n_features = len(pairs)
        self._scaler = pairs
        self._trees = ensemble.trees
        self._mean = ensemble.aggregation == "mean"
        self._n = float(len(ensemble.trees))
        self._base = ensemble.base_margin

    def score(self, row: Sequence[float]) -> float:
        """One row's probability."""
        if len(row) != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {len(row)}")
        z = [(x - m) / s for x, (m, s) in zip(row, self._scaler, strict=True)]
        total = 0.0
        for tree in self._trees:
            left, right, feature, bound = tree.left, tree.right, tree.feature, tree.bound
            i = 0
            while (child := left[i]) != -1:
                v = z[feature[i]]
                # v != v is the NaN test without a call, in the hot loop
                missing = v != v  # noqa: PLR0124
                i = child if v < bound[i] or (missing and tree.missing_left[i]) else right[i]
            total += tree.value[i]
        if self._mean:
            return total / self._n
        return sigmoid(total + self._base)

    def score_batch(self, rows: Iterable[Sequence[float]]) -> list[float]:
        """Many rows' probabilities."""
        return [self.score(row) for row in rows]


# --- trees: generated straight-line code -------------------------------------------------------


def _num(value: float) -> str:
    """A float literal that round-trips exactly; refuses anything but a finite float."""
    number = float(value)
    if not math.isfinite(number):
        raise ScorerError(f"non-finite constant {value!r} in generated code")
    return repr(number)


def _fold_tree(tree: Tree, pairs: tuple[tuple[float, float], ...]) -> Tree:
    """The same tree with raw-input bounds (see :func:`fold_scaler`)."""
    bound = array("d", tree.bound)
    for i, (child, feature) in enumerate(zip(tree.left, tree.feature, strict=True)):
        if child != -1:
            mean, scale = pairs[feature]
            bound[i] = fold_scaler(bound[i], mean, scale)
    return Tree(tree.left, tree.right, tree.feature, bound, tree.missing_left, tree.value)


def _tree_expression(tree: Tree) -> str:
    """One tree as a nested conditional expression: its leaf value for the row in ``x*``."""
    left, right, feature = tree.left.tolist(), tree.right.tolist(), tree.feature.tolist()
    bound, value, missing_left = tree.bound.tolist(), tree.value.tolist(), tree.missing_left

    def expr(node: int) -> str:
        if left[node] == -1:
            return _num(value[node])
        var = f"x{int(feature[node])}"
        limit = "1e999" if bound[node] == math.inf else _num(bound[node])  # 1e999 is inf
        # NaN compares False, so it takes the else branch: put the missing side there
        if missing_left[node]:
            return f"({expr(int(right[node]))} if {var} >= {limit} else {expr(int(left[node]))})"
        return f"({expr(int(left[node]))} if {var} < {limit} else {expr(int(right[node]))})"

    return expr(0)


TREES_PER_STATEMENT: Final = 50
"""Trees summed per statement: keeps the expression tree shallow for the compiler."""


def generate_source(ensemble: TreeEnsemble, n_features: int) -> str:
    """Python source of ``score(x)`` and ``score_batch(rows)`` for a validated ensemble.

    Each tree is one conditional expression and the trees are summed left to right, in
    the library's order (``s = (s + t0 + t1 ...)``): ~2x faster to compile and ~15%
    faster to run than if/else statements. The trees' bounds must already be on raw inputs
    (the scaler folded in). Only ints (feature indices, via ``int()``) and floats (via
    ``repr(float())``) of the ensemble reach the source: nothing an artifact holds can
    become code.
    """
    lines = ["def score(x):", f" ({', '.join(f'x{i}' for i in range(n_features))},) = x"]
    lines.append(" s = 0.0")
    trees = ensemble.trees
    for start in range(0, len(trees), TREES_PER_STATEMENT):
        lines.append(" s = (s")
        lines += [
            f"  + {_tree_expression(tree)}" for tree in trees[start : start + TREES_PER_STATEMENT]
        ]
        lines.append(" )")
    if ensemble.aggregation == "mean":
        lines.append(f" return s / {_num(float(len(trees)))}")
    else:
        lines += [
            f" m = s + {_num(ensemble.base_margin)}",
            " if m >= 0.0:",
            "  return 1.0 / (1.0 + _exp(-m))",
            " e = _exp(m)",
            " return e / (1.0 + e)",
        ]
    lines += ["def score_batch(rows):", " return [score(x) for x in rows]"]
    return "\n".join(lines) + "\n"


class CompiledTreeScorer:
    """Generated straight-line code, compiled once: ~13-20 us per row for 100 trees depth 6.

    The scaler is folded into the split bounds, so ``score`` compares raw inputs; it is
    the generated function itself (no wrapper frame), and a row of the wrong length fails
    its tuple unpacking with a ValueError.
    """

    kind = "codegen"

    def __init__(self, code: CodeType, n_features: int, source_bytes: int) -> None:
        self.n_features = n_features
        self.source_bytes = source_bytes
        namespace: dict[str, object] = {"__builtins__": {}, "_exp": math.exp}
        exec(code, namespace)
        self.score: Callable[[Sequence[float]], float] = namespace["score"]  # type: ignore[assignment]
        self.score_batch: Callable[[Iterable[Sequence[float]]], list[float]] = namespace[
            "score_batch"
        ]  # type: ignore[assignment]


def _code_cache_path(cache_dir: Path, key: str) -> Path:
    tag = sys.implementation.cache_tag or "python"
    return cache_dir / f"{key}-g{GENERATOR_VERSION}-{tag}.code"


def _compiled(
    ensemble: TreeEnsemble,
    pairs: tuple[tuple[float, float], ...],
    cache_dir: Path | None,
    cache_key: str | None,
) -> tuple[CodeType, int]:
    """The code object, from the local cache when one was written for this exact key."""
    path = _code_cache_path(cache_dir, cache_key) if cache_dir and cache_key else None
    if path is not None and path.is_file():
        blob = path.read_bytes()
        size, code = int.from_bytes(blob[:8], "little"), marshal.loads(blob[8:])
        if isinstance(code, CodeType):
            return code, size
    folded = TreeEnsemble(
        trees=tuple(_fold_tree(tree, pairs) for tree in ensemble.trees),
        aggregation=ensemble.aggregation,
        base_margin=ensemble.base_margin,
    )
    source = generate_source(folded, len(pairs))
    code = compile(source, "<rtml-generated-scorer>", "exec")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(len(source).to_bytes(8, "little") + marshal.dumps(code))
        tmp.replace(path)
    return code, len(source)


def build_scorer(
    model: Model,
    *,
    scaler_mean: Sequence[float],
    scaler_scale: Sequence[float],
    codegen_max_nodes: int = CODEGEN_MAX_NODES,
    code_cache_dir: Path | None = None,
    cache_key: str | None = None,
) -> Scorer:
    """The fastest scorer that fits: linear, generated code, or array walking.

    ``code_cache_dir`` + ``cache_key`` keep the compiled code object (``marshal``) on local
    disk, saving the ~0.1 s compile on the next load of the same model. The key must
    identify the model's content (an artifact version is content-addressed and verified
    before this call); treat the directory like ``__pycache__``: local, not shared.
    """
    if isinstance(model, LinearModel):
        return LinearScorer(model, scaler_mean, scaler_scale)
    if not model.trees:
        raise ScorerError("tree ensemble has no trees")
    if model.aggregation not in ("sum_sigmoid", "mean") or not math.isfinite(model.base_margin):
        raise ScorerError("tree ensemble aggregation is not usable")
    pairs = _scaler(scaler_mean, scaler_scale, len(scaler_mean))
    depth, nodes = 0, 0
    for tree in model.trees:
        tree_depth, tree_nodes = tree.validate(len(pairs))
        depth, nodes = max(depth, tree_depth), nodes + tree_nodes
    if nodes <= codegen_max_nodes and depth <= CODEGEN_MAX_DEPTH:
        code, size = _compiled(model, pairs, code_cache_dir, cache_key)
        return CompiledTreeScorer(code, len(pairs), size)
    return ArrayTreeScorer(model, pairs)
