"""The registry on moto S3 and on a local directory: same tests, same semantics.

Covers push (immutable versions), list, promote, rollback, history, segment aliases, a
concurrent promote (no lost update), and the serving loader: hot swap after the re-check
interval, a corrupted artifact that must not replace the serving model, segment fallback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest

from models.artifact import MODEL_FILE, load_artifact
from models.registry import (
    AliasNotFoundError,
    ConcurrentUpdateError,
    FileStore,
    ImmutableVersionError,
    ModelLoader,
    ModelRegistry,
    ModelUnavailableError,
    ObjectStore,
    RegistryError,
    S3Store,
    VersionNotFoundError,
    open_registry,
)
from tests.functional.conftest import REGION
from tests.unit.test_scorer import save

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.functional

BUCKET = "rtml-registry-test"
NAME = "fraud-test"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three versions of one model (logistic regressions on different seeds: fast)."""
    paths = []
    for seed in range(3):
        path = tmp_path_factory.mktemp(f"v{seed}")
        save(path, "logistic_regression", seed=seed)
        paths.append(path)
    return paths


class _AtomicPuts:
    """An S3 client whose conditional puts are atomic, as they are on real S3.

    moto 5.2 checks If-Match / If-None-Match and then writes without a lock, so two
    threads can both pass the check (a lost update that real S3 cannot produce). Holding
    a lock around put_object restores S3's semantics; the registry code is unchanged.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def put_object(self, **kwargs: Any) -> Any:
        with self._lock:
            return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture(params=["s3", "file"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> ModelRegistry:
    if request.param == "s3":
        request.getfixturevalue("aws")
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(
            Bucket=BUCKET,
            CreateBucketConfiguration={"LocationConstraint": REGION},  # type: ignore[typeddict-item]
        )
        # like the ArtifactsBucket construct: versioned (conditional writes still apply)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        client = cast("S3Client", _AtomicPuts(s3))
        return open_registry(f"s3://{BUCKET}/registry", s3_client=client, actor="tester")
    return open_registry(f"file://{tmp_path / 'registry'}", actor="tester")


def _version(path: Path) -> str:
    import json

    return str(json.loads((path / "manifest.json").read_text())["version"])


def _overwrite(store: ObjectStore, key: str, data: bytes) -> None:
    """Bypass the registry (an operator's mistake, bit rot): unconditional write."""
    if isinstance(store, S3Store):
        store.client.put_object(Bucket=store.bucket, Key=f"{store.prefix}/{key}", Body=data)
    else:
        assert isinstance(store, FileStore)
        (store.root / key).write_bytes(data)


def _corrupt(registry: ModelRegistry, version: str) -> None:
    key = f"models/{NAME}/versions/{version}/{MODEL_FILE}"
    stored = registry.store.get(key)
    assert stored is not None
    _overwrite(registry.store, key, stored.data.replace(b"coef", b"coef ", 1))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- versions -------------------------------------------------------------------------------


def test_registry_push_is_idempotent_and_listed(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    # when the same artifact is pushed twice
    first = registry.push(artifacts[0])
    again = registry.push(artifacts[0])
    # then it is stored once, and listed with its family
    assert first.created and not again.created and first.version == _version(artifacts[0])
    listed = registry.list()
    assert [(v.name, v.version, v.family) for v in listed] == [
        (NAME, first.version, "logistic_regression")
    ]
    assert registry.names() == [NAME]


def test_registry_version_bytes_never_change(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    # given a pushed version whose stored model was altered behind the registry's back
    pushed = registry.push(artifacts[0])
    _corrupt(registry, pushed.version)
    # then pushing the genuine artifact refuses to "repair" it silently
    with pytest.raises(ImmutableVersionError):
        registry.push(artifacts[0])


def test_registry_promote_rollback_history(registry: ModelRegistry, artifacts: list[Path]) -> None:
    v0, v1 = (registry.push(a).version for a in artifacts[:2])
    # when
    registry.promote(NAME, v0, "champion")
    registry.promote(NAME, v1, "champion")
    assert registry.promote(NAME, v1, "champion") is None  # already there: no change
    registry.promote(NAME, v0, "challenger")
    back = registry.rollback(NAME, "champion")
    # then
    assert back.from_version == v1 and back.to_version == v0
    assert registry.resolve(NAME, "champion") == v0 == registry.resolve(NAME, "challenger")
    history = registry.history(NAME)
    assert [(h.revision, h.action, h.alias, h.from_version, h.to_version) for h in history] == [
        (1, "promote", "champion", None, v0),
        (2, "promote", "champion", v0, v1),
        (3, "promote", "challenger", None, v0),
        (4, "rollback", "champion", v1, v0),
    ]
    assert {h.actor for h in history} == {"tester"}
    assert [v.aliases for v in registry.list(NAME) if v.version == v0] == [
        ["champion", "challenger"]
    ]
    with pytest.raises(AliasNotFoundError, match="no earlier version"):
        registry.rollback(NAME, "champion")


def test_registry_refuses_unknown_version_and_alias(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    v0 = registry.push(artifacts[0]).version
    with pytest.raises(VersionNotFoundError):
        registry.promote(NAME, "0123456789ab", "champion")
    with pytest.raises(RegistryError, match="unknown alias"):
        registry.promote(NAME, v0, "prod")
    with pytest.raises(AliasNotFoundError):
        registry.resolve(NAME, "champion")


def test_registry_segment_falls_back_to_default(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    v0, v1 = (registry.push(a).version for a in artifacts[:2])
    registry.promote(NAME, v0, "champion")
    registry.promote(NAME, v1, "champion", segment="eu")
    assert registry.resolve(NAME, "champion", "eu") == v1
    assert registry.resolve(NAME, "champion", "us") == v0
    # rolling back a segment's only promotion removes the override
    change = registry.rollback(NAME, "champion", segment="eu")
    assert (change.from_version, change.to_version) == (v1, v0)
    assert registry.resolve(NAME, "champion", "eu") == v0


# --- concurrency --------------------------------------------------------------------------------


class RacingStore:
    """Runs ``before_write`` once, between the registry's read and its conditional write."""

    def __init__(self, inner: ObjectStore, before_write: Callable[[], object]) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.before_write: Callable[[], object] | None = before_write

    def get(self, key: str):  # type: ignore[no-untyped-def]
        return self.inner.get(key)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self.inner.put_if_absent(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        if self.before_write is not None:
            race, self.before_write = self.before_write, None
            race()
        return self.inner.put_if_match(key, data, etag)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def local_dir(self, prefix: str) -> Path | None:
        return self.inner.local_dir(prefix)


def test_registry_concurrent_promote_of_same_alias_is_refused(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    # given two people who both read "champion = v0"
    v0, v1, v2 = (registry.push(a).version for a in artifacts)
    registry.promote(NAME, v0, "champion")
    bob = ModelRegistry(registry.store, actor="bob")
    alice = ModelRegistry(
        RacingStore(registry.store, lambda: bob.promote(NAME, v2, "champion")), actor="alice"
    )
    # when bob's promote lands between alice's read and her write
    with pytest.raises(ConcurrentUpdateError, match="by bob"):
        alice.promote(NAME, v1, "champion")
    # then bob's update is not lost, and alice wrote nothing
    assert registry.resolve(NAME, "champion") == v2
    assert [(h.actor, h.to_version) for h in registry.history(NAME)] == [
        ("tester", v0),
        ("bob", v2),
    ]


def test_registry_concurrent_promote_of_other_segment_is_merged(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    v0, v1, v2 = (registry.push(a).version for a in artifacts)
    registry.promote(NAME, v0, "champion")
    bob = ModelRegistry(registry.store, actor="bob")
    alice = ModelRegistry(
        RacingStore(registry.store, lambda: bob.promote(NAME, v2, "champion", segment="eu")),
        actor="alice",
    )
    # when both change different segments at once
    alice.promote(NAME, v1, "champion", segment="us")
    # then both changes hold
    assert registry.resolve(NAME, "champion", "eu") == v2
    assert registry.resolve(NAME, "champion", "us") == v1
    assert registry.aliases(NAME).revision == 3


def test_registry_parallel_promotes_lose_nothing(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    # given four threads promoting four segments at the same moment
    v0 = registry.push(artifacts[0]).version
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def promote(segment: str) -> None:
        start.wait()
        try:
            registry.promote(NAME, v0, "challenger", segment=segment)
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(f"s{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # then every promote is recorded exactly once
    assert errors == []
    doc = registry.aliases(NAME)
    assert doc.revision == 4 and set(doc.aliases["challenger"].segments) == {"s0", "s1", "s2", "s3"}
    assert [h.revision for h in registry.history(NAME)] == [1, 2, 3, 4]


# --- the serving loader --------------------------------------------------------------------------


def _loader(registry: ModelRegistry, tmp_path: Path, clock: Clock) -> ModelLoader:
    return ModelLoader(
        registry, NAME, recheck_seconds=30, clock=clock, cache_dir=tmp_path / "cache"
    )


def test_loader_hot_swaps_after_recheck_interval(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    v0, v1 = (registry.push(a).version for a in artifacts[:2])
    registry.promote(NAME, v0, "champion")
    clock = Clock()
    loader = _loader(registry, tmp_path, clock)
    assert loader.get().version == v0
    # when the champion moves
    registry.promote(NAME, v1, "champion")
    clock.now += 29
    assert loader.get().version == v0  # not re-checked yet
    clock.now += 1
    # then the next call after the interval serves the new version, no redeploy
    assert loader.get().version == v1
    assert (loader.stats.loads, loader.stats.swaps, loader.stats.load_failures) == (2, 1, 0)
    assert loader.get().score([1.0] * 15) == pytest.approx(loader.get().score([1.0] * 15))


def test_loader_keeps_serving_when_new_version_is_corrupt(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given a loader serving v0, and v1 corrupted in storage, then promoted
    v0, v1 = (registry.push(a).version for a in artifacts[:2])
    registry.promote(NAME, v0, "champion")
    clock = Clock()
    loader = _loader(registry, tmp_path, clock)
    assert loader.get().version == v0
    _corrupt(registry, v1)
    registry.promote(NAME, v1, "champion")
    # when the loader re-checks
    clock.now += 30
    with caplog.at_level(logging.ERROR, logger="models.registry"):
        served = loader.get()
    # then it keeps serving v0, and says so
    assert served.version == v0
    assert loader.stats.load_failures == 1 and v1 in (loader.stats.last_error or "")
    assert "keeping the current model" in caplog.text
    # and does not retry on every call, only after the next re-check
    loader.get()
    assert loader.stats.load_failures == 1
    clock.now += 30
    loader.get()
    assert loader.stats.load_failures == 2
    # and when the alias is fixed (rollback), nothing needs a swap
    registry.rollback(NAME, "champion")
    clock.now += 30
    assert loader.get().version == v0 and loader.stats.swaps == 0


def test_loader_without_a_loadable_model_raises(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    v0 = registry.push(artifacts[0]).version
    _corrupt(registry, v0)
    registry.promote(NAME, v0, "champion")
    with pytest.raises(ModelUnavailableError):
        _loader(registry, tmp_path, Clock()).get()


def test_loader_segments_fall_back_to_default(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    v0, v1 = (registry.push(a).version for a in artifacts[:2])
    registry.promote(NAME, v0, "champion")
    registry.promote(NAME, v1, "champion", segment="eu")
    loader = _loader(registry, tmp_path, Clock())
    assert (loader.get("eu").version, loader.get("us").version, loader.get().version) == (
        v1,
        v0,
        v0,
    )
    assert loader.stats.loads == 2  # the default's model is shared by "us"


def test_loader_survives_an_unreachable_registry(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v0 = registry.push(artifacts[0]).version
    registry.promote(NAME, v0, "champion")
    clock = Clock()
    loader = _loader(registry, tmp_path, clock)
    loader.get()

    def unreachable(name: str) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(registry, "aliases", unreachable)
    clock.now += 30
    assert loader.get().version == v0 and loader.stats.refresh_failures == 1


# --- URIs ---------------------------------------------------------------------------------------


def test_open_registry_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an S3 registry honours AWS_ENDPOINT_URL (a local moto server, LocalStack) via boto3
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5999")
    s3 = open_registry("s3://bucket-name/some/prefix")
    assert isinstance(s3.store, S3Store)
    assert s3.store.client.meta.endpoint_url == "http://127.0.0.1:5999"
    assert isinstance(s3.store, S3Store) and s3.store.prefix == "some/prefix"
    assert s3.uri == "s3://bucket-name/some/prefix"
    local = open_registry(f"file://{tmp_path}")
    assert isinstance(local.store, FileStore) and local.store.root == tmp_path
    assert isinstance(open_registry("relative/dir").store, FileStore)
    with pytest.raises(RegistryError):
        open_registry("gs://bucket")


# --- the command line ---------------------------------------------------------------------------


def test_cli_models_verbs(
    artifacts: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from rtml import cli

    # given a registry named by the environment, as a deployment sets it
    monkeypatch.setenv("RTML_REGISTRY", f"file://{tmp_path / 'reg'}")
    monkeypatch.setenv("RTML_ACTOR", "ci")

    def run(*argv: str) -> dict[str, object]:
        assert cli.main(["models", *argv, "--json"]) == 0
        out = capsys.readouterr().out
        assert out.count("\n") == 1  # one JSON document on stdout
        return json.loads(out)  # type: ignore[no-any-return]

    # when
    v0 = run("push", str(artifacts[0]))["version"]
    v1 = run("push", str(artifacts[1]))["version"]
    run("promote", NAME, str(v0), "--alias", "champion")
    run("promote", NAME, str(v1), "--alias", "champion", "--segment", "eu")
    listed = run("list")
    rolled = run("rollback", NAME, "--alias", "champion", "--segment", "eu")
    history = run("history", NAME)
    # then
    assert {(v["version"], tuple(v["aliases"])) for v in listed["versions"]} == {  # type: ignore[attr-defined]
        (v0, ("champion",)),
        (v1, ("champion@eu",)),
    }
    assert (rolled["from_version"], rolled["to_version"]) == (v1, v0)
    assert [h["actor"] for h in history["history"]] == ["ci", "ci", "ci"]  # type: ignore[attr-defined]
    # and a domain error is one line on stderr, exit 1
    assert cli.main(["models", "rollback", NAME, "--alias", "champion"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rtml: error:") and "roll back" in err[-1]


def test_unset_challenger_stops_the_shadow_at_the_next_recheck(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    # given a challenger served by a loader
    v0, v1 = (registry.push(a).version for a in artifacts[:2])
    registry.promote(NAME, v0, "champion")
    registry.promote(NAME, v1, "challenger")
    clock = Clock()
    challenger = ModelLoader(
        registry, NAME, "challenger", recheck_seconds=30, clock=clock, cache_dir=tmp_path / "c"
    )
    assert challenger.get().version == v1
    # when it is unset (audited), then after the re-check the loader serves nothing
    change = registry.unset(NAME, "challenger")
    assert change is not None and change.action == "unset" and change.to_version is None
    assert registry.unset(NAME, "challenger") is None  # already unset: no change
    clock.now += 30
    with pytest.raises(AliasNotFoundError):
        challenger.get()
    assert [c.action for c in registry.history(NAME)][-1] == "unset"
    assert registry.resolve(NAME, "champion") == v0


def test_fetch_of_a_version_another_loader_just_fetched_uses_theirs(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    """Functions sharing one /tmp (the local stack runs them in one process) race to cache
    the same version: the loser of the rename keeps the winner's copy instead of failing."""
    # given a pushed version, and a rival that finishes its download while ours is under way
    version = registry.push(artifacts[0]).version
    cache = tmp_path / "cache"
    store_get = registry.store.get
    rival_done = False

    def get_while_rival_finishes(key: str) -> Any:
        nonlocal rival_done
        if not rival_done:
            rival_done = True
            registry.store.get = store_get  # type: ignore[method-assign]
            registry.fetch(NAME, version, cache)  # the rival's complete fetch
        return store_get(key)

    registry.store.get = get_while_rival_finishes  # type: ignore[method-assign]

    # when ours completes
    fetched = registry.fetch(NAME, version, cache)

    # then it is the rival's directory, whole, and no temporary directory is left behind
    if isinstance(registry.store, S3Store):
        assert fetched == cache / NAME / version
        assert sorted(p.name for p in (cache / NAME).iterdir()) == [version]
    assert load_artifact(fetched).manifest.version == version
