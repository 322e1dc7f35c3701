"""The Lambda bundles: reproducible zips per kind and architecture, built without Docker.

Two kinds: ``serving`` (the stream and API handlers: no numpy, no pyarrow, tens of MB) and
``batch`` (the batch job's task handlers: numpy and pyarrow too, pruned to fit Lambda's
250 MB unzipped limit; the measured size is in the bundle's manifest and checked by a test).

``python -m infra.bundle`` (``make bundle``) installs the serving dependencies from manylinux
wheels for the target platform (pinned by the Python 3.12 lock), adds the runtime packages
(``models``, ``lambdas``, ``batch``), compiles every module to hash-checked ``.pyc`` (the Lambda
code directory is read-only, so nothing compiled at import time is ever kept: shipping them
halves cold-start imports), and zips it all in sorted order with fixed timestamps and
permissions, so the same inputs give the same bytes, hence the same CDK asset hash and no
spurious deploy. ``cdk synth`` uses the zip as it is; it never builds.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

ROOT: Final = Path(__file__).resolve().parents[1]
"""The repository (the runtime packages and the lock files live here)."""

BUILD_DIR: Final = ROOT / "build" / "lambda"
"""Where bundles are written (git-ignored)."""

PYTHON_VERSION: Final = "3.12"
"""The Lambda runtime (python3.12); its lock file pins the bundle's dependencies."""

LOCK: Final = ROOT / "requirements" / f"lock-py{PYTHON_VERSION}.txt"

REQUIREMENTS: Final = ("pydantic", "aws-lambda-powertools[tracer]", "boto3")
"""What the serving handlers import. boto3 is shipped, not taken from the runtime, so the
deployed SDK is the tested one."""

PACKAGES: Final = ("models", "lambdas", "batch")
"""rtml's runtime packages, shipped as source plus ``.pyc``."""

FORBIDDEN: Final = ("numpy", "scipy", "sklearn", "xgboost", "pyarrow", "pandas", "matplotlib")
"""Heavy libraries that must never reach a serving zip (size, and seconds of cold start)."""

BATCH_REQUIREMENTS: Final = (*REQUIREMENTS, "numpy", "pyarrow", "tzdata")
"""The batch tasks read and write Parquet and compute features with the offline engine."""

BATCH_FORBIDDEN: Final = ("scipy", "sklearn", "xgboost", "pandas", "matplotlib")
"""Even the batch bundle scores with rtml's own scorer, never the training libraries."""

BATCH_PRUNE: Final = (
    "pyarrow/include", "pyarrow/src", "pyarrow/tests", "pyarrow/libarrow_flight.so*",
    "pyarrow/_flight*.so", "pyarrow/libarrow_s3.so*", "pyarrow/_s3fs*.so", "pyarrow/_gcsfs*.so",
    "pyarrow/_azurefs*.so", "pyarrow/_hdfs*.so", "pyarrow/_orc*.so", "pyarrow/_dataset_orc*.so",
    "pyarrow/_pyarrow_cpp_tests*.so", "pyarrow/libarrow_python.so",
    "pyarrow/libarrow_python.so.*.*.*",
    "numpy/*/tests", "numpy/tests", "numpy/_core/include", "numpy/f2py", "numpy/_pyinstaller",
    "*.pyi", "*.pxd", "*.pyx",
)  # fmt: skip
"""What the batch tasks never load (Flight, pyarrow's own S3/GCS/Azure/HDFS filesystems: the
tasks read S3 with boto3; ORC; headers, tests; the linker-name copies of libarrow_python,
whose soname copy is what loads): about 60 MB, the difference between fitting Lambda's 250 MB
and not. The bundle test imports ``pyarrow.parquet`` and ``numpy`` from the pruned tree."""

LAMBDA_UNZIPPED_LIMIT: Final = 262_144_000
"""Lambda's limit on a function's unzipped code (250 MiB), layers included."""

Architecture = Literal["arm64", "x86_64"]
Kind = Literal["serving", "batch"]


@dataclass(frozen=True)
class BundleSpec:
    """What one kind of bundle holds."""

    requirements: tuple[str, ...]
    forbidden: tuple[str, ...]
    prune: tuple[str, ...] = ()


KINDS: Final[dict[Kind, BundleSpec]] = {
    "serving": BundleSpec(REQUIREMENTS, FORBIDDEN),
    "batch": BundleSpec(BATCH_REQUIREMENTS, BATCH_FORBIDDEN, BATCH_PRUNE),
}

PLATFORMS: Final[dict[Architecture, tuple[str, ...]]] = {
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64"),
}
"""Wheel tags the python3.12 runtime loads: it runs on Amazon Linux 2023 (glibc 2.34), so
manylinux_2_28 wheels (numpy and pyarrow ship only those) work as well as manylinux2014."""

_EPOCH: Final = (1980, 1, 1, 0, 0, 0)
"""The earliest time a zip entry can carry; every entry gets it."""


class BundleError(RuntimeError):
    """The bundle cannot be built, or is missing where synth needs it."""


@dataclass(frozen=True)
class Bundle:
    """A built bundle and what it weighs."""

    path: Path
    architecture: Architecture
    kind: Kind
    sha256: str
    zipped_bytes: int
    unzipped_bytes: int
    files: int


def bundle_path(
    architecture: Architecture, build_dir: Path = BUILD_DIR, kind: Kind = "serving"
) -> Path:
    """Where the bundle of a kind and architecture is (synth reads it from here)."""
    return build_dir / f"{kind}-py{PYTHON_VERSION}-{architecture}.zip"


def require_bundle(
    architecture: Architecture, build_dir: Path = BUILD_DIR, kind: Kind = "serving"
) -> Path:
    """The bundle's path, or a clear error telling how to build it."""
    path = bundle_path(architecture, build_dir, kind)
    if not path.is_file():
        raise BundleError(f"{kind} bundle {path} is missing: run `make bundle` first")
    return path


def _install(site: Path, architecture: Architecture, requirements: Sequence[str]) -> None:
    """The serving dependencies as the Lambda runtime will load them (no sdists: no compiler)."""
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile", "--target", str(site),
        *(f"--platform={tag}" for tag in PLATFORMS[architecture]),
        "--python-version", PYTHON_VERSION,
        "--implementation", "cp", "--only-binary=:all:",
        *(["-c", str(LOCK)] if LOCK.exists() else []),
        *requirements,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BundleError(f"pip could not install the bundle's dependencies:\n{result.stderr}")
    # Console scripts carry this machine's interpreter path in their shebang: not reproducible,
    # and a Lambda never runs them.
    shutil.rmtree(site / "bin", ignore_errors=True)


def _copy_packages(site: Path, packages: Iterable[str]) -> None:
    for package in packages:
        source = ROOT / package
        for path in sorted(source.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            target = site / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def _compile(site: Path) -> bool:
    """``.pyc`` never checked against their source (``unchecked-hash``: no mtime inside, so
    the bytes are reproducible, and the read-only code never changes anyway).

    Only an interpreter of the runtime's version writes ``.pyc`` the runtime can use; any other
    leaves the bundle source-only (it still works, slower to import) and says so.
    """
    if f"{sys.version_info[0]}.{sys.version_info[1]}" != PYTHON_VERSION:
        print(
            f"warning: building with Python {sys.version_info[0]}.{sys.version_info[1]},"
            f" not {PYTHON_VERSION}: no .pyc in the bundle (slower cold starts)",
            file=sys.stderr,
        )
        return False
    ok = compileall.compile_dir(
        site,
        ddir="/var/task",  # tracebacks name the path the runtime sees
        quiet=2,
        workers=1,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise BundleError("some modules of the bundle do not compile")
    return True


def _prune(site: Path, patterns: Iterable[str]) -> None:
    for pattern in patterns:
        for path in sorted(site.glob(pattern)):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def _check_contents(site: Path, kind: Kind) -> None:
    present = sorted(name for name in KINDS[kind].forbidden if (site / name).exists())
    if present:
        raise BundleError(f"heavy libraries reached the {kind} bundle: {', '.join(present)}")


def _zip(site: Path, target: Path) -> None:
    files = sorted(
        (p for p in site.rglob("*") if p.is_file()), key=lambda p: p.relative_to(site).as_posix()
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(site).as_posix(), date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever builds it
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    partial.replace(target)


def describe(path: Path, architecture: Architecture, kind: Kind = "serving") -> Bundle:
    """Hash and sizes of a built zip."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    return Bundle(
        path=path,
        architecture=architecture,
        kind=kind,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        zipped_bytes=path.stat().st_size,
        unzipped_bytes=sum(i.file_size for i in infos),
        files=len(infos),
    )


def build(
    architecture: Architecture,
    *,
    build_dir: Path = BUILD_DIR,
    packages: Sequence[str] = PACKAGES,
    kind: Kind = "serving",
) -> Bundle:
    """Build one bundle and describe it."""
    spec = KINDS[kind]
    target = bundle_path(architecture, build_dir, kind)
    with tempfile.TemporaryDirectory(prefix="rtml-bundle-") as tmp:
        site = Path(tmp) / "site"
        _install(site, architecture, spec.requirements)
        _prune(site, spec.prune)
        _copy_packages(site, packages)
        _check_contents(site, kind)
        _compile(site)
        _zip(site, target)
    bundle = describe(target, architecture, kind)
    if bundle.unzipped_bytes > LAMBDA_UNZIPPED_LIMIT:
        raise BundleError(
            f"{target.name} unzips to {bundle.unzipped_bytes / 1e6:.1f} MB, over Lambda's"
            f" {LAMBDA_UNZIPPED_LIMIT / 1e6:.1f} MB"
        )
    manifest = target.with_suffix(".json")
    manifest.write_text(
        json.dumps(
            {
                "architecture": architecture,
                "kind": kind,
                "sha256": bundle.sha256,
                "zipped_bytes": bundle.zipped_bytes,
                "unzipped_bytes": bundle.unzipped_bytes,
                "files": bundle.files,
                "requirements": list(spec.requirements),
                "lock": LOCK.name,
            },
            indent=2,
        )
        + "\n"
    )
    return bundle


def architectures_in_cdk_json(path: Path = ROOT / "cdk.json") -> list[Architecture]:
    """The architectures the app's environments deploy (so ``make bundle`` builds those)."""
    from infra.app import cdk_json_context
    from infra.settings import ENVIRONMENTS_CONTEXT_KEY, parse_environments

    environments = parse_environments(cdk_json_context(path).get(ENVIRONMENTS_CONTEXT_KEY))
    return sorted({env.functions.architecture for env in environments.values()})


def main(argv: Sequence[str] | None = None) -> None:
    """Build the bundles of the given architectures (default: those cdk.json deploys)."""
    parser = argparse.ArgumentParser(prog="python -m infra.bundle", description=__doc__)
    parser.add_argument("--arch", choices=sorted(PLATFORMS), action="append")
    parser.add_argument("--kind", choices=sorted(KINDS), action="append")
    parser.add_argument("--out", type=Path, default=BUILD_DIR)
    args = parser.parse_args(argv)
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    builds = [(a, k) for a in args.arch or architectures_in_cdk_json() for k in args.kind or KINDS]
    for architecture, kind in builds:
        try:
            bundle = build(architecture, build_dir=args.out, kind=kind)
        except BundleError as error:
            raise SystemExit(f"infra.bundle: {error}") from None
        print(
            f"{bundle.path.relative_to(ROOT) if bundle.path.is_relative_to(ROOT) else bundle.path}:"
            f" {bundle.zipped_bytes / 1e6:.1f} MB zipped, {bundle.unzipped_bytes / 1e6:.1f} MB"
            f" unzipped, {bundle.files} files, sha256 {bundle.sha256[:12]}"
        )


if __name__ == "__main__":
    main()
