"""The model artifact: round trip, content-addressed version, refusal of anything altered."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    ArtifactError,
    ArtifactIntegrityError,
    FeatureSpecMismatchError,
    load_artifact,
    manifest_version,
    read_manifest,
    save_artifact,
)
from models.features.spec import BASELINE
from tests.unit.test_scorer import FAMILIES, N_FEATURES, _data, fit, save


@pytest.fixture(scope="module")
def xgb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("xgb")
    save(path, "xgboost")
    return path


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for item in src.iterdir():
        (dst / item.name).write_bytes(item.read_bytes())
    return dst


def _rewrite_consistently(path: Path, model_doc: Any) -> None:
    """What an attacker with write access could do: new bytes, matching hashes and version."""
    (path / MODEL_FILE).write_text(json.dumps(model_doc))
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["files"][MODEL_FILE] = hashlib.sha256((path / MODEL_FILE).read_bytes()).hexdigest()
    manifest["version"] = manifest_version(manifest)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize("family", FAMILIES)
def test_artifact_round_trip(family: str, tmp_path: Path) -> None:
    # given a fitted model of each family, saved
    model, mean, scale, loaded = save(tmp_path, family)
    manifest = loaded.manifest
    # then the manifest says what the model is and needs
    assert manifest.family == family and manifest.name == "fraud-test"
    assert re.fullmatch(r"[0-9a-f]{12}", manifest.version)
    assert manifest.feature_names == BASELINE.feature_names()
    assert manifest.feature_spec_hash == BASELINE.spec_hash()
    assert manifest.scaler.mean == mean.tolist() and manifest.scaler.scale == scale.tolist()
    assert manifest.files == {
        MODEL_FILE: hashlib.sha256((tmp_path / MODEL_FILE).read_bytes()).hexdigest()
    }
    assert set(manifest.reference.features) == set(BASELINE.feature_names())
    assert manifest.scorer_check.max_abs_diff <= 1e-6 and manifest.scorer_check.rows > 0
    assert "python" not in manifest.libraries and manifest.python.startswith("3.")
    # and nothing but JSON is on disk (no pickle)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_FILE, MODEL_FILE]
    json.loads((tmp_path / MODEL_FILE).read_text())
    # and the loaded scorer reproduces the library
    x, _ = _data(11, n=200)
    ours = np.array(loaded.score_batch(x.tolist()))
    assert np.max(np.abs(ours - model.predict_proba((x - mean) / scale)[:, 1])) <= 1e-6


def test_artifact_version_is_the_content_address(xgb_dir: Path) -> None:
    doc = json.loads((xgb_dir / MANIFEST_FILE).read_text())
    assert manifest_version(doc) == doc["version"]
    doc["metrics"] = {"auc_roc": 0.99}
    assert manifest_version(doc) != doc["version"]


def test_artifact_tampered_model_file_is_refused(xgb_dir: Path, tmp_path: Path) -> None:
    # given one byte of the model changed
    path = _copy(xgb_dir, tmp_path / "a")
    data = bytearray((path / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 1
    (path / MODEL_FILE).write_bytes(bytes(data))
    # then
    with pytest.raises(ArtifactIntegrityError, match=r"model\.json has SHA-256"):
        load_artifact(path)


def test_artifact_tampered_manifest_is_refused(xgb_dir: Path, tmp_path: Path) -> None:
    # given the scaler edited in the manifest (model file untouched)
    path = _copy(xgb_dir, tmp_path / "a")
    doc = json.loads((path / MANIFEST_FILE).read_text())
    doc["scaler"]["mean"][0] += 1.0
    (path / MANIFEST_FILE).write_text(json.dumps(doc))
    with pytest.raises(ArtifactIntegrityError, match="does not match version"):
        load_artifact(path)


@pytest.mark.parametrize("missing", [MODEL_FILE, MANIFEST_FILE])
def test_artifact_missing_file_is_refused(missing: str, xgb_dir: Path, tmp_path: Path) -> None:
    path = _copy(xgb_dir, tmp_path / "a")
    (path / missing).unlink()
    with pytest.raises(ArtifactIntegrityError):
        load_artifact(path)


def test_artifact_other_feature_spec_is_refused(xgb_dir: Path) -> None:
    # given code whose night flag ends an hour earlier than the model was trained with
    other = dataclasses.replace(BASELINE, night_last_hour=5)
    with pytest.raises(FeatureSpecMismatchError, match="retrain"):
        load_artifact(xgb_dir, spec=other)
    read_manifest(xgb_dir)  # integrity alone is fine


def test_artifact_save_refuses_other_feature_order(tmp_path: Path) -> None:
    x, y = _data(0, n=300)
    model = fit("logistic_regression", x, y)
    names = BASELINE.feature_names()
    with pytest.raises(FeatureSpecMismatchError):
        save_artifact(
            tmp_path,
            name="m",
            model=model,
            family="logistic_regression",
            feature_names=names[::-1],
            scaler_mean=[0.0] * N_FEATURES,
            scaler_scale=[1.0] * N_FEATURES,
            training={},
            metrics={},
            reference_features=x,
            reference_scores=np.zeros(len(x)),
        )


@pytest.mark.parametrize(
    ("family", "bad"),
    [
        ("xgboost", "a string in a threshold"),
        ("xgboost", "a feature index out of range"),
        ("random_forest", "code in a leaf"),
    ],
)
def test_artifact_consistent_but_malformed_model_is_refused(
    family: str, bad: str, tmp_path: Path
) -> None:
    # given a model file rewritten with matching hashes (integrity cannot catch it)
    save(tmp_path, family)
    doc = json.loads((tmp_path / MODEL_FILE).read_text())
    if family == "xgboost":
        tree = doc["learner"]["gradient_booster"]["model"]["trees"][0]
        if bad.startswith("a string"):
            tree["split_conditions"][0] = "__import__('os').system('touch /tmp/pwned')"
        else:
            tree["split_indices"][0] = 99
    else:
        leaf = doc["trees"][0]["left"].index(-1)
        doc["trees"][0]["value"][leaf] = "__import__('os')"
    _rewrite_consistently(tmp_path, doc)
    # then loading refuses it as a bad model, and nothing became code
    read_manifest(tmp_path)
    with pytest.raises(ArtifactError):
        load_artifact(tmp_path)


def test_artifact_load_imports_no_ml_library(xgb_dir: Path) -> None:
    # given a fresh interpreter, as a Lambda cold start
    code = (
        "import sys; from pathlib import Path; from models.artifact import load_artifact; "
        f"m = load_artifact(Path({str(xgb_dir)!r})); m.score([1.0] * {N_FEATURES}); "
        "print(sorted({'xgboost', 'sklearn', 'numpy', 'scipy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_artifact_reference_profile(xgb_dir: Path) -> None:
    manifest = read_manifest(xgb_dir)
    flag = manifest.reference.features["TX_DURING_WEEKEND"]  # 0/1 in the test data
    assert flag.edges == [0.5] and sum(flag.counts) == flag.n
    amount = manifest.reference.features["TX_AMOUNT"]
    assert len(amount.counts) == 10 and min(amount.counts) > 0  # deciles
    assert amount.bin_of(-1e9) == 0 and amount.bin_of(1e9) == len(amount.counts) - 1
    assert manifest.reference.score.n == 1500


def test_artifact_metrics_are_plain_json(tmp_path: Path) -> None:
    x, y = _data(0, n=300)
    model = fit("logistic_regression", x, y)
    manifest = save_artifact(
        tmp_path,
        name="m",
        model=model,
        family="logistic_regression",
        feature_names=BASELINE.feature_names(),
        scaler_mean=[0.0] * N_FEATURES,
        scaler_scale=[1.0] * N_FEATURES,
        training={"train_start": __import__("datetime").date(2018, 7, 25)},
        metrics={"auc": np.float32(0.5), "ap": math.nan, "n": np.int64(3)},
        reference_features=x,
        reference_scores=model.predict_proba(x)[:, 1],
    )
    assert manifest.training == {"train_start": "2018-07-25"}
    assert manifest.metrics == {"auc": 0.5, "ap": None, "n": 3}
    load_artifact(tmp_path)


def test_artifact_save_refuses_unknown_family_and_wrong_model(tmp_path: Path) -> None:
    x, y = _data(0, n=300)
    model = fit("decision_tree", x, y)
    common: dict[str, Any] = {
        "name": "m",
        "feature_names": BASELINE.feature_names(),
        "scaler_mean": [0.0] * N_FEATURES,
        "scaler_scale": [1.0] * N_FEATURES,
        "training": {},
        "metrics": {},
        "reference_features": x,
        "reference_scores": np.zeros(len(x)),
    }
    with pytest.raises(ArtifactError, match="unknown model family"):
        save_artifact(tmp_path, model=model, family="svm", **common)
    with pytest.raises(ArtifactError, match="needs a RandomForestClassifier"):
        save_artifact(tmp_path, model=model, family="random_forest", **common)
