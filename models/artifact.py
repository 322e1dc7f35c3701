"""The model artifact: a directory holding the model in a safe format and a manifest.

Layout (``save_artifact`` writes it, ``load_artifact`` reads it)::

    ARTIFACT_DIR/
        model.json      XGBoost's own JSON (``Booster.save_model``), or rtml's export of a
                        scikit-learn model: plain JSON of numeric arrays (never a pickle)
        manifest.json   ArtifactManifest: what the model is, what it needs, every file's SHA-256

The version is content-addressed: the first 12 hex digits of the SHA-256 of the canonical
manifest without its ``version`` (the manifest lists every file's SHA-256, so the version
covers every byte). A version therefore never names two different artifacts.

Loading checks every hash, the version, and the feature spec against the running code,
and refuses a mismatch with a typed :class:`ArtifactError`. Loading imports neither xgboost,
scikit-learn nor numpy: it parses the JSON and builds the lean scorer of
:mod:`models.scorer`. Saving (training side) imports them lazily.

Example::

    manifest = save_artifact(Path("artifacts/xgb"), name="fraud", model=clf, family="xgboost",
                             feature_names=BASELINE.feature_names(), ...)
    model = load_artifact(Path("artifacts/xgb"))
    p = model.score(row)             # row: raw features in manifest.feature_names order
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import platform
import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.contracts import MODEL_FAMILIES, ModelFamily
from models.errors import RtmlError
from models.features.spec import BASELINE, SERVED, FeatureSpec
from models.scorer import (
    CODEGEN_MAX_NODES,
    LinearModel,
    Model,
    Scorer,
    ScorerError,
    Tree,
    TreeEnsemble,
    build_scorer,
    sklearn_bounds,
    xgboost_bounds,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

Family = ModelFamily
FAMILIES: Final = MODEL_FAMILIES

ModelFormat = Literal["xgboost-json", "rtml-trees", "rtml-linear"]
FORMAT_OF_FAMILY: Final[dict[str, ModelFormat]] = {
    "xgboost": "xgboost-json",
    "decision_tree": "rtml-trees",
    "random_forest": "rtml-trees",
    "logistic_regression": "rtml-linear",
}

MANIFEST_FILE: Final = "manifest.json"
MODEL_FILE: Final = "model.json"
AGREEMENT_TOLERANCE: Final = 1e-6
"""Largest |lean scorer - library| probability difference ``save_artifact`` accepts."""
PROFILE_BINS: Final = 10

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""Model names, segment names: safe as S3 key parts and file names."""
VERSION_PATTERN: Final = r"^[0-9a-f]{12}$"
_FILE_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class ArtifactError(RtmlError, ValueError):
    """An artifact cannot be saved or loaded (the message says which file and why)."""


class ArtifactIntegrityError(ArtifactError):
    """A file is missing, unlisted in a way that matters, or its bytes do not match its hash."""


class FeatureSpecMismatchError(ArtifactError):
    """The artifact was trained on features the running code does not compute."""


# --- manifest -------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Histogram(_Frozen):
    """A reference distribution for drift monitoring (PSI): open-ended bins.

    Bin 0 holds values below ``edges[0]``, bin ``i`` holds ``edges[i-1] <= v < edges[i]``,
    the last bin values from ``edges[-1]`` up; ``counts`` has ``len(edges) + 1`` entries.
    A feature with at most ``PROFILE_BINS`` distinct values gets one bin per value.
    """

    edges: list[float]
    counts: list[int]
    n: int = Field(ge=0)
    n_missing: int = Field(ge=0, description="NaN or infinite values, not in any bin")
    mean: float | None
    min: float | None
    max: float | None
    std: float | None = None
    """Standard deviation of the finite values (artifacts from before it was kept: None)."""

    @model_validator(mode="after")
    def _shape(self) -> Histogram:
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError("counts must have len(edges) + 1 entries")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must increase strictly")
        if sum(self.counts) + self.n_missing != self.n:
            raise ValueError("counts + n_missing must equal n")
        return self

    def bin_of(self, value: float) -> int:
        """The bin a finite value falls in (same convention as the reference counts)."""
        return bisect.bisect_right(self.edges, value)


class ReferenceProfile(_Frozen):
    """Histograms of every model input (raw, unscaled) and of the score, on reference data."""

    features: dict[str, Histogram]
    score: Histogram


class ScalerParams(_Frozen):
    """Inputs are standardized before the model: ``z = (x - mean) / scale``."""

    mean: list[float]
    scale: list[float]

    @model_validator(mode="after")
    def _usable(self) -> ScalerParams:
        if len(self.mean) != len(self.scale):
            raise ValueError("scaler mean and scale differ in length")
        if not all(math.isfinite(m) for m in self.mean):
            raise ValueError("scaler mean must be finite")
        if not all(math.isfinite(s) and s > 0 for s in self.scale):
            raise ValueError("scaler scale must be finite and > 0")
        return self


class ScorerCheck(_Frozen):
    """What ``save_artifact`` measured: the lean scorer against the library's predict_proba."""

    rows: int
    max_abs_diff: float
    scorer_kind: str


class ArtifactManifest(_Frozen):
    """Everything a serving path needs to trust and use the model file next to it."""

    format_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN, description="content address, see module doc")
    family: Family
    model_format: ModelFormat
    feature_names: list[str] = Field(min_length=1, description="model inputs, in order")
    feature_spec_name: str
    feature_spec_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    scaler: ScalerParams
    training: dict[str, Any] = Field(description="training window and configuration")
    metrics: dict[str, Any]
    libraries: dict[str, str] = Field(description="library versions at training time")
    python: str
    created_at: datetime
    files: dict[str, str] = Field(description="file name -> SHA-256 hex of every model file")
    reference: ReferenceProfile
    scorer_check: ScorerCheck

    @model_validator(mode="after")
    def _consistent(self) -> ArtifactManifest:
        if FORMAT_OF_FAMILY[self.family] != self.model_format:
            raise ValueError(f"family {self.family} is not stored as {self.model_format}")
        if len(self.scaler.mean) != len(self.feature_names):
            raise ValueError("scaler and feature_names differ in length")
        if len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError("feature_names repeat a name")
        if MODEL_FILE not in self.files:
            raise ValueError(f"files must list {MODEL_FILE}")
        for file_name, digest in self.files.items():
            if file_name == MANIFEST_FILE or not _match(_FILE_PATTERN, file_name):
                raise ValueError(f"bad file name in manifest: {file_name!r}")
            if not _match(r"^[0-9a-f]{64}$", digest):
                raise ValueError(f"bad SHA-256 for {file_name}")
        return self

    @property
    def ref(self) -> str:
        """``name:version``, as logs and errors show it."""
        return f"{self.name}:{self.version}"


def _match(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None


def manifest_version(manifest_doc: Mapping[str, Any]) -> str:
    """The content address of a manifest (as a JSON document), ignoring its own version."""
    body = {k: v for k, v in manifest_doc.items() if k != "version"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def sha256_file(path: Path) -> str:
    """SHA-256 hex of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- loading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A verified manifest and its lean scorer: what every serving path holds."""

    manifest: ArtifactManifest
    scorer: Scorer
    path: Path

    @property
    def name(self) -> str:
        """The model's name."""
        return self.manifest.name

    @property
    def version(self) -> str:
        """The content-addressed version."""
        return self.manifest.version

    def score(self, row: Sequence[float]) -> float:
        """Fraud probability of raw features ordered as ``manifest.feature_names``."""
        return self.scorer.score(row)

    def score_batch(self, rows: Iterable[Sequence[float]]) -> list[float]:
        """Fraud probabilities of many rows."""
        return self.scorer.score_batch(rows)

    def vector(self, features: Mapping[str, float]) -> list[float]:
        """The ordered input vector of a name -> value mapping; a missing name is an error."""
        try:
            return [float(features[name]) for name in self.manifest.feature_names]
        except KeyError as exc:
            raise ArtifactError(f"{self.manifest.ref} needs feature {exc.args[0]}") from None


def read_manifest(path: Path) -> ArtifactManifest:
    """Parse and verify an artifact directory's files against its manifest (not the spec).

    Checks: the manifest parses, its version is its content address, and every listed
    file exists with the listed SHA-256. Files not listed (e.g. reports) are ignored.
    """
    manifest_path = path / MANIFEST_FILE
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise ArtifactIntegrityError(f"{path}: no {MANIFEST_FILE} (not an artifact)") from None
    try:
        doc = json.loads(raw)
        manifest = ArtifactManifest.model_validate(doc)
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise ArtifactIntegrityError(f"{manifest_path}: unreadable manifest: {first}") from None
    try:
        address = manifest_version(doc)
    except ValueError:
        raise ArtifactIntegrityError(f"{manifest_path}: holds non-finite numbers") from None
    if address != manifest.version:
        raise ArtifactIntegrityError(
            f"{manifest_path}: content does not match version {manifest.version} (edited?)"
        )
    for file_name, expected in manifest.files.items():
        file_path = path / file_name
        if not file_path.is_file():
            raise ArtifactIntegrityError(f"{manifest.ref}: file {file_name} is missing")
        actual = sha256_file(file_path)
        if actual != expected:
            raise ArtifactIntegrityError(
                f"{manifest.ref}: {file_name} has SHA-256 {actual[:12]}..., "
                f"the manifest says {expected[:12]}... (corrupt or tampered)"
            )
    return manifest


def check_feature_spec(manifest: ArtifactManifest, spec: FeatureSpec = SERVED) -> None:
    """Refuse an artifact whose features the running code does not compute the same way.

    The running spec serves models trained on itself or on a spec it extends (the
    baseline): those features keep their names and values.
    """
    trained = next((s for s in spec.lineage() if s.spec_hash() == manifest.feature_spec_hash), None)
    if trained is None:
        known = ", ".join(f"{s.name} {s.spec_hash()[:12]}" for s in spec.lineage())
        raise FeatureSpecMismatchError(
            f"{manifest.ref} was trained on feature spec {manifest.feature_spec_name} "
            f"{manifest.feature_spec_hash[:12]}, this code computes {known}: "
            "retrain, or deploy the code the model was trained with"
        )
    if manifest.feature_names != trained.feature_names():
        raise FeatureSpecMismatchError(
            f"{manifest.ref}: feature names or order differ from feature spec {trained.name}"
        )


def load_artifact(
    path: Path,
    *,
    spec: FeatureSpec = SERVED,
    codegen_max_nodes: int = CODEGEN_MAX_NODES,
    code_cache_dir: Path | None = None,
) -> LoadedModel:
    """Verify an artifact directory and build its lean scorer (no xgboost/sklearn/numpy).

    Raises :class:`ArtifactIntegrityError` on a bad hash or manifest and
    :class:`FeatureSpecMismatchError` when the running feature code differs.
    ``code_cache_dir`` keeps the generated scorer's compiled code on local disk, keyed by
    the verified version (see :func:`models.scorer.build_scorer`).
    """
    manifest = read_manifest(path)
    check_feature_spec(manifest, spec)
    model = read_model_file(path / MODEL_FILE, manifest.model_format, len(manifest.feature_names))
    try:
        scorer = build_scorer(
            model,
            scaler_mean=manifest.scaler.mean,
            scaler_scale=manifest.scaler.scale,
            codegen_max_nodes=codegen_max_nodes,
            code_cache_dir=code_cache_dir,
            cache_key=f"{manifest.name}-{manifest.version}-n{codegen_max_nodes}",
        )
    except ScorerError as exc:
        raise ArtifactError(f"{manifest.ref}: {exc}") from None
    return LoadedModel(manifest=manifest, scorer=scorer, path=path)


# --- model files -> the scorer's normalized model --------------------------------------------


def read_model_file(path: Path, model_format: ModelFormat, n_features: int) -> Model:
    """Parse a model file into typed numbers; any unexpected shape is an ArtifactError."""
    try:
        doc = json.loads(path.read_bytes())
        if model_format == "xgboost-json":
            return _xgboost_model(doc, n_features)
        if model_format == "rtml-trees":
            return _rtml_trees(doc, n_features)
        return _rtml_linear(doc, n_features)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{path}: not a valid {model_format} model ({exc!r})") from None


def _list(values: Any, n: int | None = None) -> list[Any]:
    if not isinstance(values, list) or (n is not None and len(values) != n):
        raise ArtifactError("expected a list" + ("" if n is None else f" of {n} entries"))
    return values


def _xgboost_model(doc: Any, n_features: int) -> TreeEnsemble:
    """XGBoost's JSON (binary:logistic gbtree, numeric splits) -> trees with float64 bounds."""
    learner = doc["learner"]
    objective = learner["objective"]["name"]
    if objective != "binary:logistic":
        raise ArtifactError(f"XGBoost objective {objective!r} is not supported")
    booster = learner["gradient_booster"]
    if booster["name"] != "gbtree":
        raise ArtifactError(f"XGBoost booster {booster['name']!r} is not supported")
    params = learner["learner_model_param"]
    if int(params["num_feature"]) != n_features or int(params.get("num_target", "1")) != 1:
        raise ArtifactError("XGBoost model's feature or target count does not match")
    base = str(params["base_score"]).strip("[]")
    if "," in base:
        raise ArtifactError("XGBoost model has a vector base_score")
    base_score = array("f", [float(base)])[0]
    if not 0.0 < base_score < 1.0:
        raise ArtifactError(f"XGBoost base_score {base_score} is not a probability")
    trees_doc = _list(booster["model"]["trees"])
    # early stopping: predict_proba uses the trees up to best_iteration only
    best = learner.get("attributes", {}).get("best_iteration")
    if best is not None:
        indptr = _list(booster["model"]["iteration_indptr"])
        trees_doc = trees_doc[: int(indptr[int(best) + 1])]
    trees = []
    for tree in trees_doc:
        left = _list(tree["left_children"])
        n = len(left)
        if any(_list(tree["split_type"], n)) or int(tree["tree_param"]["size_leaf_vector"]) > 1:
            raise ArtifactError("XGBoost categorical or multi-target trees are not supported")
        conditions = _list(tree["split_conditions"], n)
        internal = [i for i in range(n) if left[i] != -1]
        bounds = [0.0] * n
        for i, b in zip(internal, xgboost_bounds([conditions[i] for i in internal]), strict=True):
            bounds[i] = b
        leaves = array("f", conditions)  # leaf values are float32
        trees.append(
            Tree.of(
                left=left,
                right=_list(tree["right_children"], n),
                feature=[max(f, 0) for f in _list(tree["split_indices"], n)],
                bound=bounds,
                missing_left=[d == 1 for d in _list(tree["default_left"], n)],
                value=[leaves[i] if left[i] == -1 else 0.0 for i in range(n)],
            )
        )
    margin = math.log(base_score / (1.0 - base_score))
    return TreeEnsemble(trees=tuple(trees), aggregation="sum_sigmoid", base_margin=margin)


def _rtml_trees(doc: Any, n_features: int) -> TreeEnsemble:
    """rtml's scikit-learn tree export -> trees with float64 bounds."""
    if doc["format"] != "rtml-trees" or doc["n_features"] != n_features:
        raise ArtifactError("not an rtml-trees export for this many features")
    trees = []
    for tree in _list(doc["trees"]):
        left = _list(tree["left"])
        n = len(left)
        threshold = _list(tree["threshold"], n)
        internal = [i for i in range(n) if left[i] != -1]
        bounds = [0.0] * n
        for i, b in zip(internal, sklearn_bounds([threshold[i] for i in internal]), strict=True):
            bounds[i] = b
        trees.append(
            Tree.of(
                left=left,
                right=_list(tree["right"], n),
                feature=_list(tree["feature"], n),
                bound=bounds,
                missing_left=[m == 1 for m in _list(tree["missing_left"], n)],
                value=_list(tree["value"], n),
            )
        )
    if not trees:
        raise ArtifactError("rtml-trees export has no trees")
    return TreeEnsemble(trees=tuple(trees), aggregation="mean")


def _rtml_linear(doc: Any, n_features: int) -> LinearModel:
    """rtml's logistic-regression export -> coefficients."""
    if doc["format"] != "rtml-linear":
        raise ArtifactError("not an rtml-linear export")
    coef = _list(doc["coef"], n_features)
    intercept = doc["intercept"]
    if not all(type(c) in (int, float) for c in (*coef, intercept)):
        raise ArtifactError("linear export holds something other than numbers")
    return LinearModel(coef=tuple(float(c) for c in coef), intercept=float(intercept))


# --- saving (training side: numpy, and the model's library, imported lazily) ------------------


def save_artifact(
    out_dir: Path,
    *,
    name: str,
    model: object,
    family: str,
    feature_names: list[str],
    scaler_mean: list[float],
    scaler_scale: list[float],
    training: dict[str, Any],
    metrics: dict[str, Any],
    reference_features: npt.NDArray[np.floating[Any]],
    reference_scores: npt.NDArray[np.floating[Any]],
    spec: FeatureSpec = BASELINE,
) -> ArtifactManifest:
    """Write a fitted model as an artifact directory and return its manifest.

    ``model`` is the fitted estimator (``xgboost.XGBClassifier`` or scikit-learn's
    LogisticRegression / DecisionTreeClassifier / RandomForestClassifier) trained on
    *scaled* inputs; ``reference_features`` are raw (unscaled) inputs of reference data
    (e.g. the test week), one row per transaction in ``feature_names`` order, and
    ``reference_scores`` the model's scores on them: both become the drift profile.
    Before the manifest is written, the lean scorer is checked against the library's
    ``predict_proba`` on up to 2,000 reference rows; a difference above 1e-6 raises
    :class:`ArtifactError`.
    """
    import numpy as np

    if family not in FAMILIES:
        raise ArtifactError(f"unknown model family {family!r} (one of {', '.join(FAMILIES)})")
    if list(feature_names) != spec.feature_names():
        raise FeatureSpecMismatchError(
            f"feature_names differ from feature spec {spec.name}: {spec.feature_names()}"
        )
    features = np.asarray(reference_features, dtype=np.float64)
    scores = np.asarray(reference_scores, dtype=np.float64).ravel()
    if features.ndim != 2 or features.shape[1] != len(feature_names) or len(features) == 0:
        raise ArtifactError(f"reference_features must be (n, {len(feature_names)}), non-empty")
    scaler = ScalerParams(
        mean=[float(v) for v in scaler_mean], scale=[float(v) for v in scaler_scale]
    )
    if len(scaler.mean) != len(feature_names):
        raise ArtifactError("scaler length differs from feature_names")
    _check_classes(model)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)  # no stale manifest over a new model
    model_path = out_dir / MODEL_FILE
    model_format = FORMAT_OF_FAMILY[family]
    if family == "xgboost":
        _check_xgboost(model)
        model.get_booster().save_model(str(model_path))  # type: ignore[attr-defined]
    else:
        export = _export_sklearn(model, family, len(feature_names))
        model_path.write_text(json.dumps(export, allow_nan=False, separators=(",", ":")))

    # what is served is what is checked: parse the written file exactly as loading does
    parsed = read_model_file(model_path, model_format, len(feature_names))
    scorer = build_scorer(parsed, scaler_mean=scaler.mean, scaler_scale=scaler.scale)
    sample = features[np.linspace(0, len(features) - 1, min(len(features), 2000)).astype(int)]
    sample = sample[np.isfinite(sample).all(axis=1)] if family != "xgboost" else sample
    scaled = (sample - np.asarray(scaler.mean)) / np.asarray(scaler.scale)
    expected = model.predict_proba(scaled)[:, 1]  # type: ignore[attr-defined]
    ours = np.asarray(scorer.score_batch(sample.tolist()))
    worst = float(np.max(np.abs(ours - expected), initial=0.0))
    if not worst <= AGREEMENT_TOLERANCE:
        raise ArtifactError(
            f"lean {scorer.kind} scorer differs from {family} predict_proba by {worst:.3g}"
        )

    doc = {
        "name": name,
        "version": "0" * 12,
        "family": family,
        "model_format": model_format,
        "feature_names": list(feature_names),
        "feature_spec_name": spec.name,
        "feature_spec_hash": spec.spec_hash(),
        "scaler": scaler.model_dump(),
        "training": _plain(training),
        "metrics": _plain(metrics),
        "libraries": _library_versions(),
        "python": platform.python_version(),
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "files": {MODEL_FILE: sha256_file(model_path)},
        "reference": {
            "features": {n: _histogram(features[:, i]) for i, n in enumerate(feature_names)},
            "score": _histogram(scores, SCORE_EDGES),
        },
        "scorer_check": {"rows": len(sample), "max_abs_diff": worst, "scorer_kind": scorer.kind},
    }
    try:
        ArtifactManifest.model_validate(doc)  # fail before writing anything invalid
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ArtifactError(f"invalid manifest: {first['loc']}: {first['msg']}") from None
    doc = json.loads(json.dumps(doc, allow_nan=False))  # exactly what a reader will see
    doc["version"] = manifest_version(doc)
    tmp = out_dir / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(out_dir / MANIFEST_FILE)
    return ArtifactManifest.model_validate(doc)


def _check_classes(model: object) -> None:
    classes = getattr(model, "classes_", None)
    if classes is None or [int(c) for c in classes] != [0, 1]:
        raise ArtifactError(
            f"model must be a fitted binary classifier of classes [0, 1], not {classes}"
        )


def _check_xgboost(model: object) -> None:
    if not hasattr(model, "get_booster"):
        raise ArtifactError(f"family xgboost needs an XGBClassifier, not {type(model).__name__}")
    missing = getattr(model, "missing", math.nan)
    if not (isinstance(missing, float) and math.isnan(missing)):
        raise ArtifactError("XGBClassifier(missing=...) other than NaN is not supported")


def _export_sklearn(model: object, family: str, n_features: int) -> dict[str, Any]:
    """rtml's own export of a scikit-learn model: plain numbers, loadable without sklearn."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    expected = {
        "logistic_regression": LogisticRegression,
        "decision_tree": DecisionTreeClassifier,
        "random_forest": RandomForestClassifier,
    }[family]
    if not isinstance(model, expected):
        raise ArtifactError(
            f"family {family} needs a {expected.__name__}, not {type(model).__name__}"
        )
    if getattr(model, "n_features_in_", None) != n_features:
        raise ArtifactError(f"model was fitted on {getattr(model, 'n_features_in_', '?')} features")
    if isinstance(model, LogisticRegression):
        return {
            "format": "rtml-linear",
            "coef": [float(c) for c in model.coef_.ravel()],
            "intercept": float(model.intercept_.ravel()[0]),
        }
    estimators = model.estimators_ if isinstance(model, RandomForestClassifier) else [model]
    return {
        "format": "rtml-trees",
        "n_features": n_features,
        "trees": [_export_tree(estimator.tree_) for estimator in estimators],
    }


def _export_tree(tree: Any) -> dict[str, list[int] | list[float]]:
    """One fitted ``tree_``: children, split, NaN direction, class-1 probability at leaves."""
    import numpy as np

    if tree.n_outputs != 1 or int(tree.n_classes[0]) != 2:
        raise ArtifactError("only single-output binary trees are supported")
    value = tree.value[:, 0, :].astype(np.float64)
    total = value.sum(axis=1)
    total[total == 0.0] = 1.0  # as predict_proba's normalizer
    proba = value[:, 1] / total
    leaf = tree.children_left == -1
    return {
        "left": [int(v) for v in tree.children_left],
        "right": [int(v) for v in tree.children_right],
        "feature": [
            0 if is_leaf else int(f) for f, is_leaf in zip(tree.feature, leaf, strict=True)
        ],
        "threshold": [
            0.0 if is_leaf else float(t) for t, is_leaf in zip(tree.threshold, leaf, strict=True)
        ],
        "missing_left": [int(v) for v in tree.missing_go_to_left],
        "value": [float(p) if is_leaf else 0.0 for p, is_leaf in zip(proba, leaf, strict=True)],
    }


SCORE_EDGES: Final = tuple(k / 20 for k in range(1, 20))
"""Fixed score edges every 0.05, beside the deciles (which end near 0.003 for a fraud score):
the reference's share above any threshold on this grid is exact."""


def _histogram(
    values: npt.NDArray[np.floating[Any]], extra_edges: Sequence[float] = ()
) -> dict[str, Any]:
    """Reference histogram: one bin per value when few distinct values, else deciles.

    A value holding a decile or more of the data (a terminal risk that is 0 for most rows)
    gets a bin of its own, and the deciles are taken over the other values: otherwise every
    decile is that value, the histogram has one bin, and the input could never drift.
    ``extra_edges`` are added as they are (the score's: a decision threshold falls on one,
    so the reference's high-risk share is known exactly).
    """
    import numpy as np

    finite = values[np.isfinite(values)]
    distinct, counts_of = np.unique(finite, return_counts=True)
    if len(distinct) <= PROFILE_BINS:
        edges = (distinct[1:] + distinct[:-1]) / 2.0
    else:
        masses = distinct[counts_of >= len(finite) / PROFILE_BINS]
        rest = finite[~np.isin(finite, masses)]
        quantiles = (
            np.quantile(rest, np.linspace(0.0, 1.0, PROFILE_BINS + 1)[1:-1])
            if rest.size
            else np.array([])
        )
        own_bins = np.concatenate([masses, np.nextafter(masses, np.inf)])
        edges = np.unique(np.concatenate([quantiles, own_bins]))
    if len(extra_edges):
        edges = np.unique(np.concatenate([edges, np.asarray(extra_edges, dtype=np.float64)]))
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    empty = len(finite) == 0
    return {
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "n": len(values),
        "n_missing": len(values) - len(finite),
        "mean": None if empty else float(finite.mean()),
        "min": None if empty else float(np.min(finite)),
        "max": None if empty else float(np.max(finite)),
        "std": None if empty else float(finite.std()),
    }


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("numpy", "scikit-learn", "xgboost", "xgboost-cpu", "pydantic"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _plain(value: Any) -> Any:  # noqa: PLR0911 (one return per JSON kind reads best)
    """A JSON-able copy (numpy scalars and arrays, dates, paths); NaN/inf become None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _plain(value.tolist())
    raise ArtifactError(f"cannot store {type(value).__name__} in a manifest: {value!r}")
