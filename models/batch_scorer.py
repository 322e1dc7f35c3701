"""Vectorized batch scoring with numpy: the lean scorer's results, many rows per call.

The batch job scores 10k-1M rows at once, and the lean scorer of :mod:`models.scorer` pays
one Python call per row (~135k rows/s). This module scores a whole matrix with numpy and
returns the lean scorer's numbers: every row takes the same branch in every tree (the same
``z = (x - mean) / scale`` in float64, compared with the same ``z < bound``, NaN going the
node's missing direction), and leaf values are summed in the same order (from 0.0, tree
by tree, then the base margin), so margins and means are bit-identical. Only the final
sigmoid uses numpy's ``exp`` where the lean scorer calls ``math.exp``; the two differ by at
most an ulp, so probabilities differ by at most ~1e-16.

Trees take one of two paths:

- ``bitvector`` (QuickScorer, Lucchese et al., SIGIR 2015), when every tree has at most 64
  leaves (XGBoost's default depth 6 always does). A tree's leaves, numbered left to right,
  are the bits of a uint64; a node whose test fails (the row goes right) rules out the
  leaves of its left subtree, and the exit leaf is the lowest bit left. For one feature,
  the failing nodes are those whose bound is <= z: a prefix of the feature's sorted
  bounds, so one ``searchsorted`` per feature and row finds them, and a precomputed table
  holds, per prefix, the AND of their masks for every tree. A row then costs one table
  row (a uint64 per tree) and one AND per feature, with no per-node work at all.
  Features with few distinct bounds share a table (their ranks combined), saving passes.
- ``walk``, for deeper trees (a scikit-learn forest grown to purity): all trees walked
  level by level for a block of rows, children stored next to each other so the next
  node is ``child + (z < bound)``; leaves loop to themselves, and trees are ordered by
  depth so each level only touches the trees still deeper than it.

numpy is imported inside the functions: this module is for the batch job, and a serving
Lambda never imports it (``tests/unit/test_import_chain.py``); :mod:`models.scorer` stays
free of numpy.

Example::

    scorer = load_batch_scorer(load_artifact(Path("data/artifacts/xgboost")))
    p = scorer.score_matrix(x)     # x: float64 (n_rows, n_features), raw, manifest order
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from models.artifact import (
    MODEL_FILE,
    ArtifactError,
    ArtifactIntegrityError,
    LoadedModel,
    read_model_file,
    sha256_file,
)
from models.scorer import LinearModel, Model, ScorerError, Tree, TreeEnsemble

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    F64 = npt.NDArray[np.float64]
    Ints = npt.NDArray[np.intp]
    U64 = npt.NDArray[np.uint64]

Method = Literal["auto", "bitvector", "walk"]
"""How trees are scored: ``auto`` picks ``bitvector`` when every tree has <= 64 leaves."""

MAX_BITVECTOR_LEAVES: Final = 64
"""Leaves of one tree in one uint64 mask."""
BLOCK_ROWS: Final = 4096
"""Rows per block of tree scoring: its working set (a few MB) stays in L2/L3 cache."""
SUB_ROWS: Final = 512
"""Rows per bitvector pass: the (rows, trees) uint64 masks stay in L2 (~400 KB)."""
WALK_ROWS: Final = 1024
"""Rows per block of the level walk: (trees, rows) index arrays stay in cache."""
LINEAR_ROWS: Final = 65_536
"""Rows per block of the linear model (a few column operations per block)."""
GROUP_MAX_BYTES: Final = 4 << 20
"""Features share a bitvector table (rows: the product of theirs, 8 bytes per tree) while it
stays this small: one pass over the masks instead of several. The baseline XGBoost model's
15 features then take 8 passes (7 MB of tables), ~30% faster than 15 passes; larger tables
gained nothing more (16 MB: 7 passes)."""


class BatchScorer(Protocol):
    """A matrix of raw ordered features in, one fraud probability per row out."""

    @property
    def n_features(self) -> int:
        """How many columns a row has."""
        ...

    @property
    def kind(self) -> str:
        """``linear``, ``bitvector`` or ``walk``: how the scorer computes (for reports)."""
        ...

    def score_matrix(self, x: npt.ArrayLike, *, threads: int = 1) -> F64:
        """Probabilities of the rows of ``x`` (float64, ``(n_rows, n_features)``), in order.

        ``threads > 1`` scores blocks of rows in parallel (numpy releases the GIL).
        """
        ...


class _Blocked:
    """Input checks, blocks of rows and threads; subclasses score one block."""

    kind: str
    n_features: int
    block_rows: int

    def _score_block(self, x: F64, out: F64) -> None:
        raise NotImplementedError

    def score_matrix(self, x: npt.ArrayLike, *, threads: int = 1) -> F64:
        """Probabilities of the rows of ``x``, in order (see :class:`BatchScorer`)."""
        import numpy as np

        matrix = np.asarray(x, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(
                f"expected a (rows, {self.n_features}) matrix: {self.n_features} feature "
                f"columns, got shape {matrix.shape}"
            )
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        out = np.empty(len(matrix), dtype=np.float64)
        step = self.block_rows

        def block(start: int) -> None:
            # inf - inf, 0 * inf: NaN, as the lean scorer computes it silently
            with np.errstate(over="ignore", invalid="ignore"):
                self._score_block(matrix[start : start + step], out[start : start + step])

        starts = range(0, len(matrix), step)
        if threads == 1 or len(starts) <= 1:
            for start in starts:
                block(start)
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(block, starts))
        return out


def _scaler(mean: Sequence[float], scale: Sequence[float], n: int) -> tuple[F64, F64]:
    """The scaler as float64 columns, checked as :func:`models.scorer.build_scorer` does."""
    import numpy as np

    if len(mean) != n or len(scale) != n:
        raise ScorerError(f"scaler has {len(mean)}/{len(scale)} entries for {n} features")
    m = np.array([float(v) for v in mean], dtype=np.float64)
    s = np.array([float(v) for v in scale], dtype=np.float64)
    if not (np.isfinite(m).all() and np.isfinite(s).all() and (s > 0.0).all()):
        raise ScorerError("scaler entries must be finite, scales > 0")
    return m, s


def _scaled_columns(x: F64, mean: F64, scale: F64) -> F64:
    """``(x - mean) / scale`` as a (features, rows) C-contiguous array: one column a row."""
    import numpy as np

    z = np.empty((x.shape[1], x.shape[0]), dtype=np.float64)
    np.subtract(x.T, mean[:, None], out=z)
    np.divide(z, scale[:, None], out=z)
    return z


def _sigmoid(margin: F64, out: F64) -> None:
    """The lean scorer's two-sided logistic, elementwise (never overflows)."""
    import numpy as np

    e = np.exp(-np.abs(margin))  # exp(-m) for m >= 0, exp(m) below: the lean argument
    one_plus = 1.0 + e
    np.divide(1.0, one_plus, out=out, where=margin >= 0.0)
    np.divide(e, one_plus, out=out, where=~(margin >= 0.0))  # also NaN, as the lean else


# --- linear ----------------------------------------------------------------------------------


class LinearBatchScorer(_Blocked):
    """``sigmoid(intercept + sum of coef_j * z_j)``, summed in feature order as the lean scorer.

    A BLAS matrix product would sum in another order (~1e-16 apart); one multiply-add per
    column over a block of rows costs about the same and keeps the margins bit-identical.
    """

    kind = "linear"
    block_rows = LINEAR_ROWS

    def __init__(self, model: LinearModel, mean: Sequence[float], scale: Sequence[float]) -> None:
        import numpy as np

        self.n_features = len(model.coef)
        self._mean, self._scale = _scaler(mean, scale, self.n_features)
        if not all(math.isfinite(c) for c in (*model.coef, model.intercept)):
            raise ScorerError("linear model has non-finite coefficients")
        self._coef = np.array([float(c) for c in model.coef], dtype=np.float64)
        self._intercept = float(model.intercept)

    def _score_block(self, x: F64, out: F64) -> None:
        import numpy as np

        z = _scaled_columns(x, self._mean, self._scale)
        margin = np.full(len(x), self._intercept)
        for coef, column in zip(self._coef, z, strict=True):
            margin += coef * column
        _sigmoid(margin, out)


# --- trees --------------------------------------------------------------------------------------


class _TreeBlocked(_Blocked):
    """Aggregation shared by both tree paths: sequential leaf sums, then mean or sigmoid."""

    def __init__(self, ensemble: TreeEnsemble, mean: F64, scale: F64) -> None:
        self.n_features = len(mean)
        self._mean, self._scale = mean, scale
        self._n_trees = len(ensemble.trees)
        self._is_mean = ensemble.aggregation == "mean"
        self._base = float(ensemble.base_margin)

    def _finish(self, leaves: F64, order: Sequence[int], out: F64) -> None:
        """Sum ``leaves`` (trees, rows) over trees in ``order`` from 0.0, as the lean scorer.

        One vector add per tree: numpy's own reductions sum pairwise or in an order that
        depends on the array's layout, and the lean sums are then not reproduced exactly.
        """
        import numpy as np

        total = np.zeros(leaves.shape[1], dtype=np.float64)
        for tree in order:
            total += leaves[tree]
        if self._is_mean:
            np.divide(total, float(self._n_trees), out=out)
        else:
            total += self._base
            _sigmoid(total, out)


def _leaf_ranges(tree: Tree) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Leaves left to right, and each internal node with its left subtree's leaf range.

    Returns ``(leaves, [(node, first, end), ...])``: the left subtree of ``node`` holds the
    leaves numbered ``first .. end - 1``. Only nodes reachable from the root count.
    """
    left, right = tree.left, tree.right
    leaves: list[int] = []
    spans: dict[int, tuple[int, int]] = {}
    internal: list[tuple[int, int, int]] = []
    stack = [(0, False)]
    while stack:
        node, children_done = stack.pop()
        if left[node] == -1:
            spans[node] = (len(leaves), len(leaves) + 1)
            leaves.append(node)
        elif children_done:
            first, end = spans[left[node]]
            spans[node] = (first, spans[right[node]][1])
            internal.append((node, first, end))
        else:
            stack += [(node, True), (right[node], False), (left[node], False)]
    return leaves, internal


def _bit_count(bits: U64) -> npt.NDArray[np.integer[Any]]:
    """How many bits are set in each ``2**k - 1`` (k >= 1): k.

    ``np.bitwise_count`` needs numpy 2; numpy 1.26 (allowed by pyproject) gets k from the
    float64 exponent of ``2**(k - 1)``, exact for every power of two (~5x slower).
    """
    import numpy as np

    count = getattr(np, "bitwise_count", None)
    if count is not None:
        counted: npt.NDArray[np.integer[Any]] = count(bits)
        return counted
    return np.frexp(((bits >> np.uint64(1)) + np.uint64(1)).astype(np.float64))[1]


class BitvectorTreeScorer(_TreeBlocked):
    """QuickScorer-style scoring of trees of <= 64 leaves (see the module docstring)."""

    kind = "bitvector"
    block_rows = BLOCK_ROWS

    def __init__(self, ensemble: TreeEnsemble, mean: F64, scale: F64) -> None:
        import numpy as np

        super().__init__(ensemble, mean, scale)
        n_trees = self._n_trees
        all_ones = (1 << MAX_BITVECTOR_LEAVES) - 1
        leaf_values = np.zeros((n_trees, MAX_BITVECTOR_LEAVES), dtype=np.float64)
        feature: list[int] = []
        bound: list[float] = []
        owner: list[int] = []
        mask: list[int] = []
        goes_left: list[bool] = []
        for t, tree in enumerate(ensemble.trees):
            leaves, internal = _leaf_ranges(tree)
            if len(leaves) > MAX_BITVECTOR_LEAVES:
                raise ScorerError(
                    f"tree {t} has {len(leaves)} leaves, more than {MAX_BITVECTOR_LEAVES}: "
                    "use method walk"
                )
            leaf_values[t, : len(leaves)] = [tree.value[i] for i in leaves]
            for node, first, end in internal:
                feature.append(tree.feature[node])
                bound.append(tree.bound[node])
                owner.append(t)
                mask.append(all_ones ^ ((1 << end) - (1 << first)))  # rules out the left
                goes_left.append(bool(tree.missing_left[node]))
        features = np.array(feature, dtype=np.intp)
        bounds = np.array(bound, dtype=np.float64)
        owners = np.array(owner, dtype=np.intp)
        masks = np.array(mask, dtype=np.uint64)
        missing_right = ~np.array(goes_left, dtype=bool)

        # per feature: its sorted bounds (+ NaN last, see _ranks) and the table of prefixes
        tables: list[tuple[int, F64, U64]] = []
        for f in np.unique(features).tolist():
            on_f = features == f
            keys = np.unique(bounds[on_f])  # sorted; bounds are never NaN (validated)
            step = np.full((len(keys), n_trees), all_ones, dtype=np.uint64)
            np.bitwise_and.at(
                step, (np.searchsorted(keys, bounds[on_f]), owners[on_f]), masks[on_f]
            )
            table = np.empty((len(keys) + 2, n_trees), dtype=np.uint64)
            table[0] = all_ones  # rank 0: z below every bound, every test passes
            np.bitwise_and.accumulate(step, axis=0, out=table[1:-1])
            nan_row = np.full(n_trees, all_ones, dtype=np.uint64)
            nan_right = on_f & missing_right
            np.bitwise_and.at(nan_row, owners[nan_right], masks[nan_right])
            table[-1] = nan_row  # rank len(keys) + 1: NaN fails only missing-right nodes
            tables.append((f, np.append(keys, math.nan), table))

        # features with small tables share one: the rank of the pair is r_a * rows_b + r_b
        tables.sort(key=lambda entry: len(entry[2]))
        self._groups: list[tuple[list[tuple[int, F64, int]], U64]] = []
        for f, keys, table in tables:
            shared_bytes = table.nbytes * (len(self._groups[-1][1]) if self._groups else 0)
            if self._groups and shared_bytes <= GROUP_MAX_BYTES:
                members, shared = self._groups[-1]
                merged = (shared[:, None, :] & table[None, :, :]).reshape(-1, n_trees)
                self._groups[-1] = ([*members, (f, keys, len(table))], merged)
            else:
                self._groups.append(([(f, keys, len(table))], table))
        # exit leaf index: lowest set bit + 1 (a popcount) + this offset, per tree
        self._leaf_offset = (np.arange(n_trees, dtype=np.intp) * MAX_BITVECTOR_LEAVES - 1)[:, None]
        self._leaf_values = leaf_values.ravel()

    def _ranks(self, z: F64) -> list[Ints]:
        """Per group, each row's table row: ``searchsorted`` on the bounds, NaN last.

        numpy orders NaN after +inf (documented under ``np.sort``, which ``searchsorted``
        follows), so with NaN appended to the keys a NaN gets its own rank, ``len + 1``,
        and +inf counts every bound (+inf included).
        """
        import numpy as np

        ranks = []
        for members, _ in self._groups:
            rank: Ints | None = None
            for f, keys, rows in members:
                r = np.searchsorted(keys, z[f], side="right")
                rank = r if rank is None else rank * rows + r
            assert rank is not None
            ranks.append(rank)
        return ranks

    def _score_block(self, x: F64, out: F64) -> None:
        import numpy as np

        n = len(x)
        ranks = self._ranks(_scaled_columns(x, self._mean, self._scale))
        leaf_index = np.empty((self._n_trees, n), dtype=np.intp)
        masks = np.empty((min(n, SUB_ROWS), self._n_trees), dtype=np.uint64)
        other = np.empty_like(masks)
        for start in range(0, n, SUB_ROWS):
            end = min(start + SUB_ROWS, n)
            m, o = masks[: end - start], other[: end - start]
            for g, (_, table) in enumerate(self._groups):
                # mode="clip": "raise" buffers ``out`` (numpy's docs), ~3x slower; ranks
                # are in range by construction
                if g == 0:
                    np.take(table, ranks[g][start:end], axis=0, out=m, mode="clip")
                else:
                    np.take(table, ranks[g][start:end], axis=0, out=o, mode="clip")
                    m &= o
            np.subtract(m, np.uint64(1), out=o)
            o ^= m  # the lowest set bit and every bit below it
            np.add(_bit_count(o).T, self._leaf_offset, out=leaf_index[:, start:end])
        self._finish(self._leaf_values.take(leaf_index, mode="clip"), range(self._n_trees), out)


class WalkTreeScorer(_TreeBlocked):
    """Trees of any size, walked level by level for a block of rows (module docstring)."""

    kind = "walk"
    block_rows = WALK_ROWS

    def __init__(self, ensemble: TreeEnsemble, mean: F64, scale: F64) -> None:
        import numpy as np

        super().__init__(ensemble, mean, scale)
        n_features = self.n_features
        depths = [tree.validate(n_features)[0] for tree in ensemble.trees]
        order = sorted(range(self._n_trees), key=lambda t: -depths[t])  # deepest first
        self._position = [0] * self._n_trees  # tree t's row in the (sorted) leaf array
        for i, t in enumerate(order):
            self._position[t] = i
        self._active = [sum(d > level for d in depths) for level in range(max(depths))]
        parts: list[tuple[Ints, F64, Ints, F64]] = []
        roots, size, self._nan_column = [], 0, False
        for t in order:
            column, bound, child, value = self._flatten(ensemble.trees[t], size)
            self._nan_column |= bool((column >= 2 * n_features).any())
            parts.append((column, bound, child, value))
            roots.append(size)
            size += len(column)
        self._column = np.concatenate([p[0] for p in parts])
        self._bound = np.concatenate([p[1] for p in parts])
        self._child = np.concatenate([p[2] for p in parts])
        self._value = np.concatenate([p[3] for p in parts])
        self._roots = np.array(roots, dtype=np.intp)[:, None]

    def _flatten(self, tree: Tree, base: int) -> tuple[Ints, F64, Ints, F64]:
        """One tree, renumbered so that node ``i``'s right child is ``child[i]``, its left
        ``child[i] + 1`` (go left iff ``ext[column] < bound``); leaves loop to themselves.

        ``ext`` holds three copies of z: NaN as -inf (read by nodes whose NaN goes left),
        NaN as +inf (NaN goes right), and -1.0 for NaN else 0.0, which only a node with the
        bound -inf and NaN going left needs (left iff NaN: nothing is below -inf).
        """
        import numpy as np

        n_features = self.n_features
        left = np.array(tree.left, dtype=np.intp)
        right = np.array(tree.right, dtype=np.intp)
        reachable, internal = [np.zeros(1, dtype=np.intp)], []
        frontier = reachable[0]
        while frontier.size:  # breadth first from the root: pruned nodes never enter
            inner = frontier[left[frontier] != -1]
            internal.append(inner)
            frontier = np.concatenate([right[inner], left[inner]])
            reachable.append(frontier)
        nodes, inner = np.concatenate(reachable), np.concatenate(internal)
        new = np.empty(len(left), dtype=np.intp)
        new[0] = 0
        new[right[inner]] = 1 + 2 * np.arange(len(inner))
        new[left[inner]] = 2 + 2 * np.arange(len(inner))
        count = 1 + 2 * len(inner)
        column = np.zeros(count, dtype=np.intp)
        bound = np.full(count, -math.inf)  # a leaf: nothing is below -inf, it stays put
        child = base + np.arange(count, dtype=np.intp)
        value = np.zeros(count, dtype=np.float64)
        feature = np.array(tree.feature, dtype=np.intp)[inner]
        goes_left = np.frombuffer(tree.missing_left, dtype=np.uint8)[inner] == 1
        node_bound = np.array(tree.bound, dtype=np.float64)[inner]
        column[new[inner]] = np.where(goes_left, feature, n_features + feature)
        bound[new[inner]] = node_bound
        nan_only = goes_left & (node_bound == -math.inf)
        column[new[inner[nan_only]]] = 2 * n_features + feature[nan_only]
        bound[new[inner[nan_only]]] = 0.0
        child[new[inner]] = base + 1 + 2 * np.arange(len(inner))
        leaves = nodes[left[nodes] == -1]
        value[new[leaves]] = np.array(tree.value, dtype=np.float64)[leaves]
        return column, bound, child, value

    def _score_block(self, x: F64, out: F64) -> None:
        import numpy as np

        n, n_features = len(x), self.n_features
        z = (x - self._mean) / self._scale
        nan = np.isnan(z)
        width = 3 * n_features if self._nan_column else 2 * n_features
        ext = np.empty((n, width), dtype=np.float64)
        ext[:, :n_features] = z
        ext[:, n_features : 2 * n_features] = z
        np.copyto(ext[:, :n_features], -math.inf, where=nan)
        np.copyto(ext[:, n_features : 2 * n_features], math.inf, where=nan)
        if self._nan_column:
            ext[:, 2 * n_features :] = np.where(nan, -1.0, 0.0)
        flat = ext.ravel()
        row_offset = np.arange(n, dtype=np.intp) * width
        node = np.empty((self._n_trees, n), dtype=np.intp)
        node[:] = self._roots
        index, nxt = np.empty_like(node), np.empty_like(node)
        value, limit = np.empty(node.shape), np.empty(node.shape)
        below = np.empty(node.shape, dtype=bool)
        for active in self._active:  # trees deeper than the level: a prefix (sorted)
            g, i, nx = node[:active], index[:active], nxt[:active]
            v, b, c = value[:active], limit[:active], below[:active]
            np.take(self._column, g, out=i, mode="clip")
            i += row_offset
            np.take(flat, i, out=v, mode="clip")
            np.take(self._bound, g, out=b, mode="clip")
            np.less(v, b, out=c)
            np.take(self._child, g, out=nx, mode="clip")
            np.add(nx, c, out=g)
        self._finish(self._value.take(node, mode="clip"), self._position, out)


# --- construction --------------------------------------------------------------------------------


def build_batch_scorer(
    model: Model,
    *,
    scaler_mean: Sequence[float],
    scaler_scale: Sequence[float],
    method: Method = "auto",
) -> BatchScorer:
    """The batch scorer of a normalized model, checked as :func:`models.scorer.build_scorer`.

    ``method`` forces a tree path (tests and benchmarks); ``bitvector`` on a tree of more
    than 64 leaves is a ScorerError.
    """
    if isinstance(model, LinearModel):
        return LinearBatchScorer(model, scaler_mean, scaler_scale)
    if not model.trees:
        raise ScorerError("tree ensemble has no trees")
    if model.aggregation not in ("sum_sigmoid", "mean") or not math.isfinite(model.base_margin):
        raise ScorerError("tree ensemble aggregation is not usable")
    mean, scale = _scaler(scaler_mean, scaler_scale, len(scaler_mean))
    nodes = [tree.validate(len(mean))[1] for tree in model.trees]
    small = all((n + 1) // 2 <= MAX_BITVECTOR_LEAVES for n in nodes)  # binary: leaves
    if method == "bitvector" or (method == "auto" and small):
        return BitvectorTreeScorer(model, mean, scale)
    return WalkTreeScorer(model, mean, scale)


def load_batch_scorer(loaded: LoadedModel, *, method: Method = "auto") -> BatchScorer:
    """The batch scorer of a loaded artifact: its model file re-read and re-checked.

    ``load_artifact`` verified the file and built the lean scorer; the batch scorer needs
    the normalized model again, so the file is read once more, after its SHA-256 is checked
    against the verified manifest (the file may have been replaced since).
    """
    manifest = loaded.manifest
    path = loaded.path / MODEL_FILE
    if sha256_file(path) != manifest.files[MODEL_FILE]:
        raise ArtifactIntegrityError(f"{manifest.ref}: {MODEL_FILE} changed since it was loaded")
    model = read_model_file(path, manifest.model_format, len(manifest.feature_names))
    try:
        return build_batch_scorer(
            model,
            scaler_mean=manifest.scaler.mean,
            scaler_scale=manifest.scaler.scale,
            method=method,
        )
    except ScorerError as exc:
        raise ArtifactError(f"{manifest.ref}: {exc}") from None
