"""The model registry: immutable versions, aliases with an audit trail, and a hot-swapping loader.

Where: ``s3://bucket/prefix`` (boto3; ``AWS_ENDPOINT_URL`` points it at moto or LocalStack
with the same code) or ``file://DIR`` (the local default, same semantics). Layout::

    models/<name>/versions/<version>/manifest.json, model.json   immutable (create-if-absent)
    models/<name>/aliases.json                                    champion/challenger, per segment
    models/<name>/history/<revision>.json                         one immutable entry per change

Versions are content-addressed (see :mod:`models.artifact`) and written only if absent, so
a version never changes once pushed. Every alias change is a compare-and-swap on
``aliases.json`` (S3 ``If-Match`` on the ETag, a locked compare-and-replace on disk): two
people promoting at once cannot lose an update. A concurrent change to *another* alias or
segment is merged by retrying on a fresh read; a concurrent change to the *same* one fails
with :class:`ConcurrentUpdateError`. Each change bumps the document's revision and is
written to the history (who, when, from, to); the document also carries its last change so a
crash between the two writes is repaired by the next writer.

Aliases may be per segment (e.g. a region): a segment without its own target falls back to
the alias's default. :class:`ModelLoader` resolves an alias for serving, caches models per
execution environment, re-checks the alias at most every N seconds, swaps versions without a
redeploy, and keeps serving the old model when a new one fails to load.

Example::

    registry = open_registry("s3://my-bucket/registry")
    pushed = registry.push(Path("artifacts/xgb"))
    registry.promote(pushed.name, pushed.version, "champion")
    loader = ModelLoader(registry, pushed.name, recheck_seconds=60)
    p = loader.get(segment="eu").score(row)
"""

from __future__ import annotations

import builtins
import contextlib
import getpass
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.artifact import (
    MANIFEST_FILE,
    NAME_PATTERN,
    VERSION_PATTERN,
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactManifest,
    LoadedModel,
    load_artifact,
    read_manifest,
)
from models.contracts import ENV_ACTOR
from models.errors import RtmlError
from models.features.spec import SERVED, FeatureSpec

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

DEFAULT_REGISTRY: Final = "file://.rtml/registry"

Alias = Literal["champion", "challenger"]
ALIASES: Final[tuple[str, ...]] = ("champion", "challenger")
MAX_PREVIOUS: Final = 50
"""How many earlier versions an alias remembers for rollback."""
MAX_ATTEMPTS: Final = 5


class RegistryError(RtmlError):
    """A registry operation cannot be done (the message says why, in one line)."""


class VersionNotFoundError(RegistryError):
    """No such model version in the registry."""


class AliasNotFoundError(RegistryError):
    """The alias (or segment) points at nothing, or has nothing to roll back to."""


class ImmutableVersionError(RegistryError):
    """A push would change the bytes of an existing version."""


class ConcurrentUpdateError(RegistryError):
    """Someone changed the same alias between our read and our write; nothing was written."""


class ModelUnavailableError(RegistryError):
    """The loader has no model to serve (the first load failed)."""


# --- documents ------------------------------------------------------------------------------


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AliasTarget(_Doc):
    """Where an alias points, and the versions it pointed at before (oldest first)."""

    version: str = Field(pattern=VERSION_PATTERN)
    previous: list[str] = Field(default_factory=list)


class AliasEntry(_Doc):
    """One alias: its default target and per-segment overrides."""

    default: AliasTarget | None = None
    segments: dict[str, AliasTarget] = Field(default_factory=dict)


class AliasChange(_Doc):
    """One audited alias change (also a history entry)."""

    revision: int = Field(ge=1)
    name: str
    alias: Alias
    segment: str | None
    action: Literal["promote", "rollback", "unset"]
    from_version: str | None = Field(description="what the alias resolved to before")
    to_version: str | None = Field(description="what it resolves to after")
    actor: str
    at: datetime


class AliasDocument(_Doc):
    """All aliases of one model name; ``revision`` counts the changes."""

    name: str
    revision: int = Field(0, ge=0)
    aliases: dict[Alias, AliasEntry] = Field(default_factory=dict)
    last_change: AliasChange | None = None

    def resolve(self, alias: str, segment: str | None = None) -> str | None:
        """The version serving ``alias`` for ``segment`` (its override, else the default)."""
        entry = self.aliases.get(alias)  # type: ignore[call-overload]
        if entry is None:
            return None
        target = entry.segments.get(segment) if segment is not None else None
        target = target or entry.default
        return target.version if target else None


@dataclass(frozen=True)
class PushResult:
    """What ``push`` did: ``created`` is False when the version was already there."""

    name: str
    version: str
    created: bool
    uri: str


@dataclass(frozen=True)
class VersionInfo:
    """One version in ``list``, with the aliases pointing at it (``champion``, ``champion@eu``)."""

    name: str
    version: str
    family: str
    created_at: datetime
    metrics: dict[str, Any]
    aliases: list[str]


# --- storage: small interface, two implementations -------------------------------------------


@dataclass(frozen=True)
class Stored:
    """An object's bytes and its entity tag (what a conditional write compares)."""

    data: bytes
    etag: str


class PreconditionFailedError(Exception):
    """A conditional write lost: the object changed (or exists) since it was read."""


class ObjectStore(Protocol):
    """The few operations the registry needs; keys are ``/``-separated relative paths."""

    uri: str

    def get(self, key: str) -> Stored | None:
        """The object, or None if absent."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create the object; False (and no write) if it already exists."""
        ...

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        """Replace the object if its ETag is ``etag`` (None: only if absent); the new ETag."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix``."""
        ...

    def local_dir(self, prefix: str) -> Path | None:
        """A local directory holding ``prefix``'s objects as files, if there is one."""
        ...


_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_key(key: str) -> str:
    if not all(_KEY_PART.fullmatch(part) for part in key.split("/")):
        raise RegistryError(f"invalid registry key {key!r}")
    return key


class FileStore:
    """A directory: create-if-absent via ``link``, compare-and-swap under ``flock``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"file://{root}"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def get(self, key: str) -> Stored | None:
        """The file's bytes; the ETag is their SHA-256."""
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return Stored(data, hashlib.sha256(data).hexdigest())

    def _temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write a temp file, then hard-link it into place: atomic, fails if present."""
        path = self._path(key)
        tmp = self._temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        return True

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        import fcntl  # POSIX; released by the OS if the process dies

        path.parent.mkdir(parents=True, exist_ok=True)
        with (path.parent / f".{path.name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        """Under the key's lock: compare the current ETag, then atomically replace."""
        path = self._path(key)
        with self._locked(path):
            current = self.get(key)
            if (current.etag if current else None) != etag:
                raise PreconditionFailedError(key)
            self._temp(path, data).replace(path)
        return hashlib.sha256(data).hexdigest()

    def list(self, prefix: str) -> list[str]:
        """Files under the prefix (temp and lock files are hidden: they start with '.')."""
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def local_dir(self, prefix: str) -> Path | None:
        """The directory itself: a file registry needs no download."""
        return self._path(prefix)


class S3Store:
    """An S3 prefix: ``If-None-Match: *`` creates, ``If-Match: <etag>`` compare-and-swaps."""

    def __init__(self, bucket: str, prefix: str = "", client: S3Client | None = None) -> None:
        if client is None:
            import boto3  # honours AWS_ENDPOINT_URL, AWS_REGION, credentials from the env

            client = boto3.client("s3")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @staticmethod
    def _code(exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    def get(self, key: str) -> Stored | None:
        """The object's bytes and ETag."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None
        return Stored(response["Body"].read(), response["ETag"])

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """``PutObject`` with ``If-None-Match: *``: S3 refuses (412) if the key exists."""
        try:
            self.put_if_match(key, data, None)
        except PreconditionFailedError:
            return False
        return True

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        """Conditional ``PutObject``; 412, 409 (a racing conditional write) and 404 lose."""
        bucket, object_key = self.bucket, self._key(key)
        try:
            if etag is None:
                response = self.client.put_object(
                    Bucket=bucket, Key=object_key, Body=data, IfNoneMatch="*"
                )
            else:
                response = self.client.put_object(
                    Bucket=bucket, Key=object_key, Body=data, IfMatch=etag
                )
        except self.client.exceptions.ClientError as exc:
            code = self._code(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412"):
                raise PreconditionFailedError(key) from None
            raise
        return response["ETag"]

    def list(self, prefix: str) -> list[str]:
        """Keys under the prefix, relative to the store's prefix."""
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix) + "/"):
            keys += [item["Key"][strip:] for item in page.get("Contents", [])]
        return sorted(keys)

    def local_dir(self, prefix: str) -> None:
        """None: objects must be downloaded."""
        return None


def open_registry(
    uri: str | None = None, *, s3_client: S3Client | None = None, actor: str | None = None
) -> ModelRegistry:
    """A registry from a URI: ``s3://bucket[/prefix]``, ``file://DIR`` or a plain path.

    ``uri`` None means :data:`DEFAULT_REGISTRY` (the CLI passes ``RTML_REGISTRY`` itself).
    """
    uri = uri or DEFAULT_REGISTRY
    store: ObjectStore
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise RegistryError(f"registry URI {uri!r} names no bucket")
        store = S3Store(bucket, prefix, s3_client)
    elif uri.startswith("file://"):
        store = FileStore(Path(uri[len("file://") :]))
    elif "://" in uri:
        raise RegistryError(f"registry URI {uri!r}: use s3://bucket/prefix or file://DIR")
    else:
        store = FileStore(Path(uri))
    return ModelRegistry(store, actor=actor)


def default_actor() -> str:
    """Who is changing an alias: ``RTML_ACTOR`` (CI), else the OS user."""
    actor = os.environ.get(ENV_ACTOR)
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --- the registry ---------------------------------------------------------------------------


def _check_name(kind: str, value: str, pattern: str = NAME_PATTERN) -> str:
    if not re.fullmatch(pattern, value):
        raise RegistryError(f"invalid {kind} {value!r}")
    return value


def _check_alias(alias: str) -> Alias:
    if alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r} (one of {', '.join(ALIASES)})")
    return alias  # type: ignore[return-value]


class ModelRegistry:
    """Push, list, promote, rollback, history over an :class:`ObjectStore`."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        actor: str | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.actor = actor
        self._now = now

    @property
    def uri(self) -> str:
        """Where the registry lives."""
        return self.store.uri

    # keys
    @staticmethod
    def _version_prefix(name: str, version: str) -> str:
        return f"models/{_check_name('model name', name)}/versions/" + _check_name(
            "version", version, VERSION_PATTERN
        )

    @staticmethod
    def _aliases_key(name: str) -> str:
        return f"models/{_check_name('model name', name)}/aliases.json"

    @staticmethod
    def _history_key(name: str, revision: int) -> str:
        return f"models/{_check_name('model name', name)}/history/{revision:010d}.json"

    # versions
    def push(self, artifact_dir: Path) -> PushResult:
        """Upload a verified artifact; idempotent, and a version's bytes never change.

        The model files go first and the manifest last, so a listed version is complete.
        """
        manifest = read_manifest(artifact_dir)
        prefix = self._version_prefix(manifest.name, manifest.version)
        for file_name, digest in sorted(manifest.files.items()):
            data = (artifact_dir / file_name).read_bytes()
            if not self.store.put_if_absent(f"{prefix}/{file_name}", data):
                existing = self.store.get(f"{prefix}/{file_name}")
                if existing is None or hashlib.sha256(existing.data).hexdigest() != digest:
                    raise ImmutableVersionError(
                        f"{manifest.ref}: {file_name} in the registry differs from yours"
                    )
        created = self.store.put_if_absent(
            f"{prefix}/{MANIFEST_FILE}", (artifact_dir / MANIFEST_FILE).read_bytes()
        )
        if not created:
            existing_manifest = self._manifest(manifest.name, manifest.version)
            if existing_manifest.files != manifest.files:
                raise ImmutableVersionError(f"{manifest.ref} exists with other files")
        log.info("%s %s in %s", "pushed" if created else "already had", manifest.ref, self.uri)
        return PushResult(manifest.name, manifest.version, created, f"{self.uri}/{prefix}")

    def _manifest(self, name: str, version: str) -> ArtifactManifest:
        stored = self.store.get(f"{self._version_prefix(name, version)}/{MANIFEST_FILE}")
        if stored is None:
            raise VersionNotFoundError(f"{name}:{version} is not in {self.uri}")
        try:
            return ArtifactManifest.model_validate_json(stored.data)
        except ValidationError:
            raise ArtifactIntegrityError(f"{name}:{version}: unreadable manifest") from None

    def exists(self, name: str, version: str) -> bool:
        """Whether a complete version (its manifest) is in the registry."""
        return self.store.get(f"{self._version_prefix(name, version)}/{MANIFEST_FILE}") is not None

    def names(self) -> list[str]:
        """Model names with at least one version."""
        return sorted({key.split("/")[1] for key in self.store.list("models")})

    def list(self, name: str | None = None) -> list[VersionInfo]:
        """Versions (newest first per name), with the aliases that point at each."""
        infos: list[VersionInfo] = []
        for model_name in [name] if name else self.names():
            keys = self.store.list(f"models/{_check_name('model name', model_name)}/versions")
            versions = [k.split("/")[3] for k in keys if k.endswith(f"/{MANIFEST_FILE}")]
            doc = self.aliases(model_name)
            pointing: dict[str, list[str]] = {}
            for alias, entry in doc.aliases.items():
                if entry.default:
                    pointing.setdefault(entry.default.version, []).append(alias)
                for segment, target in sorted(entry.segments.items()):
                    pointing.setdefault(target.version, []).append(f"{alias}@{segment}")
            rows = []
            for version in versions:
                manifest = self._manifest(model_name, version)
                rows.append(
                    VersionInfo(
                        name=model_name,
                        version=version,
                        family=manifest.family,
                        created_at=manifest.created_at,
                        metrics=manifest.metrics,
                        aliases=pointing.get(version, []),
                    )
                )
            infos += sorted(rows, key=lambda r: r.created_at, reverse=True)
        return infos

    def fetch(self, name: str, version: str, dest_root: Path) -> Path:
        """A local directory holding the version (a file registry returns its own).

        Downloads into a temporary directory renamed into place, so a half download is
        never mistaken for an artifact. The caller verifies it (``load_artifact`` does).
        """
        prefix = self._version_prefix(name, version)
        local = self.store.local_dir(prefix)
        if local is not None:
            if not (local / MANIFEST_FILE).is_file():
                raise VersionNotFoundError(f"{name}:{version} is not in {self.uri}")
            return local
        target = dest_root / name / version
        if target.is_dir():
            return target
        manifest = self._manifest(name, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            for file_name in [*manifest.files, MANIFEST_FILE]:
                stored = self.store.get(f"{prefix}/{file_name}")
                if stored is None:
                    raise ArtifactIntegrityError(f"{name}:{version}: {file_name} is missing")
                (tmp / file_name).write_bytes(stored.data)
            try:
                tmp.rename(target)
            except OSError:
                # Another loader in this process or environment (the local stack runs every
                # function in one process, sharing /tmp) finished the same immutable version
                # first: use theirs.
                if not (target / MANIFEST_FILE).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    # aliases
    def aliases(self, name: str) -> AliasDocument:
        """The model's alias document (empty if no alias was ever set)."""
        stored = self.store.get(self._aliases_key(name))
        return self._parse_aliases(name, stored)

    @staticmethod
    def _parse_aliases(name: str, stored: Stored | None) -> AliasDocument:
        if stored is None:
            return AliasDocument(name=name)
        try:
            return AliasDocument.model_validate_json(stored.data)
        except ValidationError:
            raise RegistryError(f"aliases of {name} are unreadable (edited by hand?)") from None

    def resolve(self, name: str, alias: str, segment: str | None = None) -> str:
        """The version an alias serves for a segment (or its default)."""
        version = self.aliases(name).resolve(_check_alias(alias), segment)
        if version is None:
            where = f" for segment {segment}" if segment else ""
            raise AliasNotFoundError(f"{name} has no {alias}{where}")
        return version

    def promote(
        self, name: str, version: str, alias: str, segment: str | None = None
    ) -> AliasChange | None:
        """Point ``alias`` (of ``segment``, else the default) at ``version``.

        Returns the recorded change, or None if the alias already pointed there.
        """
        alias_ = _check_alias(alias)
        if segment is not None:
            _check_name("segment", segment)
        if not self.exists(name, version):
            raise VersionNotFoundError(f"{name}:{version} is not in {self.uri}: push it first")

        def change(entry: AliasEntry) -> tuple[AliasEntry, str | None] | None:
            current = entry.segments.get(segment) if segment else entry.default
            if current is not None and current.version == version:
                return None
            previous = [*current.previous, current.version][-MAX_PREVIOUS:] if current else []
            target = AliasTarget(version=version, previous=previous)
            return _with_target(entry, segment, target), version

        return self._update(name, alias_, segment, "promote", change)

    def rollback(self, name: str, alias: str, segment: str | None = None) -> AliasChange:
        """Point the alias back at the version before its last promotion.

        A segment override with nothing earlier is removed (the segment falls back to the
        default); a default with nothing earlier is an :class:`AliasNotFoundError`.
        """
        alias_ = _check_alias(alias)

        def change(entry: AliasEntry) -> tuple[AliasEntry, str | None]:
            current = entry.segments.get(segment) if segment else entry.default
            where = f"{name} {alias}" + (f" segment {segment}" if segment else "")
            if current is None:
                raise AliasNotFoundError(f"{where} is not set: nothing to roll back")
            if current.previous:
                target = AliasTarget(version=current.previous[-1], previous=current.previous[:-1])
                return _with_target(entry, segment, target), target.version
            if segment is None:
                raise AliasNotFoundError(f"{where} has no earlier version to roll back to")
            segments = {s: t for s, t in entry.segments.items() if s != segment}
            fallback = entry.default.version if entry.default else None
            return entry.model_copy(update={"segments": segments}), fallback

        change_made = self._update(name, alias_, segment, "rollback", change)
        assert change_made is not None  # rollback always changes something or raises
        return change_made

    def unset(self, name: str, alias: str, segment: str | None = None) -> AliasChange | None:
        """Remove ``alias`` (of ``segment``, else its default), e.g. to switch a shadow
        challenger off; serving loaders drop it at their next re-check. None if unset already.
        """
        alias_ = _check_alias(alias)
        if segment is not None:
            _check_name("segment", segment)

        def change(entry: AliasEntry) -> tuple[AliasEntry, str | None] | None:
            if segment is None:
                if entry.default is None:
                    return None
                return entry.model_copy(update={"default": None}), None
            if segment not in entry.segments:
                return None
            segments = {s: t for s, t in entry.segments.items() if s != segment}
            fallback = entry.default.version if entry.default else None
            return entry.model_copy(update={"segments": segments}), fallback

        return self._update(name, alias_, segment, "unset", change)

    def _update(
        self,
        name: str,
        alias: Alias,
        segment: str | None,
        action: Literal["promote", "rollback", "unset"],
        change: Callable[[AliasEntry], tuple[AliasEntry, str | None] | None],
    ) -> AliasChange | None:
        """Read, change one alias entry, compare-and-swap; retry only if *another* entry moved."""
        key = self._aliases_key(name)
        seen: AliasTarget | None = None
        for attempt in range(MAX_ATTEMPTS):
            stored = self.store.get(key)
            doc = self._parse_aliases(name, stored)
            entry = doc.aliases.get(alias, AliasEntry())
            current = entry.segments.get(segment) if segment else entry.default
            if attempt == 0:
                seen = current
            elif current != seen:
                who = doc.last_change
                by = f" by {who.actor} at {who.at:%Y-%m-%d %H:%M:%S}" if who else ""
                raise ConcurrentUpdateError(
                    f"{name} {alias}{' segment ' + segment if segment else ''} was changed{by} "
                    f"while you were changing it (now {current.version if current else 'unset'}); "
                    "nothing was written: check and re-run"
                )
            result = change(entry)
            if result is None:
                return None
            new_entry, to_version = result
            revision = doc.revision + 1
            record = AliasChange(
                revision=revision,
                name=name,
                alias=alias,
                segment=segment,
                action=action,
                from_version=doc.resolve(alias, segment),
                to_version=to_version,
                actor=self.actor or default_actor(),
                at=self._now(),
            )
            new_doc = doc.model_copy(
                update={
                    "revision": revision,
                    "aliases": {**doc.aliases, alias: new_entry},
                    "last_change": record,
                }
            )
            if doc.last_change is not None:  # repair a history write a crash may have lost
                self._write_history(doc.last_change)
            try:
                self.store.put_if_match(
                    key, new_doc.model_dump_json(indent=1).encode(), stored.etag if stored else None
                )
            except PreconditionFailedError:
                log.info("aliases of %s changed under us (attempt %d): re-reading", name, attempt)
                time.sleep(0.01 * (attempt + 1))
                continue
            self._write_history(record)
            log.info(
                "%s %s%s: %s -> %s (%s)",
                name,
                alias,
                f"@{segment}" if segment else "",
                record.from_version,
                record.to_version,
                record.actor,
            )
            return record
        raise ConcurrentUpdateError(
            f"aliases of {name} kept changing: gave up after {MAX_ATTEMPTS}"
        )

    def _write_history(self, record: AliasChange) -> None:
        self.store.put_if_absent(
            self._history_key(record.name, record.revision), record.model_dump_json().encode()
        )

    def history(self, name: str) -> builtins.list[AliasChange]:
        """Every alias change of a model, oldest first."""
        prefix = f"models/{_check_name('model name', name)}/history"
        records = {}
        for key in self.store.list(prefix):
            stored = self.store.get(key)
            if stored is not None:
                record = AliasChange.model_validate_json(stored.data)
                records[record.revision] = record
        last = self.aliases(name).last_change
        if last is not None:
            records.setdefault(last.revision, last)
        return [records[r] for r in sorted(records)]


def _with_target(entry: AliasEntry, segment: str | None, target: AliasTarget) -> AliasEntry:
    if segment is None:
        return entry.model_copy(update={"default": target})
    return entry.model_copy(update={"segments": {**entry.segments, segment: target}})


# --- the serving loader ---------------------------------------------------------------------


@dataclass
class LoaderStats:
    """Counters a handler turns into metrics (e.g. ``ModelLoadFailures``)."""

    loads: int = 0
    swaps: int = 0
    load_failures: int = 0
    refresh_failures: int = 0
    last_error: str | None = None


@dataclass
class ModelLoader:
    """Serves ``alias`` of a model, per segment, hot-swapping when the alias moves.

    Create one per execution environment (module scope). ``get`` re-reads the alias at most
    every ``recheck_seconds`` (one small GET); a new version is loaded and swapped in; if
    it fails to load (corrupt, wrong feature spec), the old model keeps serving, the
    failure is logged and counted in ``stats``, and the load is retried only after the
    next re-check. ``clock`` is injectable for tests.
    """

    registry: ModelRegistry
    name: str
    alias: str = "champion"
    recheck_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "rtml-models")
    spec: FeatureSpec = SERVED
    code_cache_dir: Path | None = None
    stats: LoaderStats = field(default_factory=LoaderStats)

    def __post_init__(self) -> None:
        _check_alias(self.alias)
        self._doc: AliasDocument | None = None
        self._checked_at = 0.0
        self._serving: dict[str | None, LoadedModel] = {}
        self._models: dict[str, LoadedModel] = {}
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, segment: str | None = None) -> LoadedModel:
        """The model serving ``segment`` (its override, else the default)."""
        with self._lock:
            now = self.clock()
            if self._doc is None or now - self._checked_at >= self.recheck_seconds:
                self._refresh(now)
            assert self._doc is not None
            current = self._serving.get(segment)
            version = self._doc.resolve(self.alias, segment)
            if version is None:  # unset (e.g. a challenger switched off): stop serving it
                self._serving.pop(segment, None)
                raise AliasNotFoundError(
                    f"{self.name} has no {self.alias} for {segment or 'default'}"
                )
            if current is not None and current.version == version:
                return current
            model = self._models.get(version) or self._load(version)
            if model is None:
                if current is not None:
                    return current
                raise ModelUnavailableError(
                    f"{self.name}:{version} ({self.alias}) failed to load: {self.stats.last_error}"
                )
            self._serving[segment] = model
            if current is not None:
                self.stats.swaps += 1
                log.info(
                    "swapped %s %s: %s -> %s",
                    self.name,
                    segment or "default",
                    current.version,
                    version,
                )
            self._evict()
            return model

    def versions(self) -> dict[str | None, str]:
        """What each segment served last (None: the default)."""
        return {segment: model.version for segment, model in self._serving.items()}

    def _refresh(self, now: float) -> None:
        try:
            self._doc = self.registry.aliases(self.name)
        except Exception as exc:  # keep serving what we have: S3 may be briefly unreachable
            if self._doc is None:
                raise
            self.stats.refresh_failures += 1
            self.stats.last_error = f"alias refresh: {exc}"
            log.warning("could not re-read the aliases of %s, keeping them: %s", self.name, exc)
        self._checked_at = now

    def _load(self, version: str) -> LoadedModel | None:
        failed_at = self._failed_at.get(version)
        if failed_at is not None and failed_at >= self._checked_at:
            return None  # failed since the last re-check: wait for the next one
        path: Path | None = None
        try:
            path = self.registry.fetch(self.name, version, self.cache_dir)
            model = load_artifact(path, spec=self.spec, code_cache_dir=self.code_cache_dir)
            if model.name != self.name or model.version != version:
                raise ArtifactIntegrityError(f"{path} holds {model.manifest.ref}, not {version}")
        except (ArtifactError, RegistryError, OSError) as exc:
            self.stats.load_failures += 1
            self.stats.last_error = f"{self.name}:{version}: {exc}"
            self._failed_at[version] = self._checked_at
            log.error(
                "could not load %s:%s, keeping the current model: %s", self.name, version, exc
            )
            if path is not None and path.is_relative_to(self.cache_dir):
                shutil.rmtree(path, ignore_errors=True)  # download again next time
            return None
        self._failed_at.pop(version, None)
        self._models[version] = model
        self.stats.loads += 1
        log.info("loaded %s (%s scorer)", model.manifest.ref, model.scorer.kind)
        return model

    def _evict(self) -> None:
        serving = {model.version for model in self._serving.values()}
        for version in [v for v in self._models if v not in serving]:
            del self._models[version]
