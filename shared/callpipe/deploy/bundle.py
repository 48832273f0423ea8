"""Deployable source directories for the Cloud Functions, one per step.

Cloud Functions builds a Python function from a directory with ``main.py`` and
``requirements.txt`` at its root. The ``callpipe`` package is not published to an index, so
the bundle carries a copy of it next to ``main.py`` (the source root is on ``sys.path`` at
run time), and ``requirements.txt`` lists the runtime dependencies of ``pyproject.toml`` so
the build installs the same version ranges the tests ran with.

Terraform zips each bundle and names the object after the zip's hash, so the bundle must
depend on nothing but the repository's content: caches are left out and files are copied
byte for byte.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from callpipe.topology import REPO_ROOT, Topology, load_topology

MARKER = ".callpipe-bundle"
REQUIREMENTS = "requirements.txt"
PACKAGE = "callpipe"
# Relative to schemas/: what a function may read at run time. The Spanner DDL is left out
# because deployment applies it (callpipe deploy ddl), never a function.
SCHEMA_ENTRIES = ("pipeline.yaml", "messages")
# Operator and build tooling never runs inside a function; leaving it out also keeps a change
# to it from altering every bundle's hash and so redeploying every function.
DEV_ONLY_SUBPACKAGES = ("cli", "deploy", "devstack", "simulator")
_IGNORED = ("__pycache__", "*.pyc", "*.pyo", ".mypy_cache", ".pytest_cache", ".ruff_cache")


class BundleError(Exception):
    """The bundle cannot be built as asked; nothing usable was written."""


@dataclass(frozen=True)
class Bundle:
    step: str
    directory: Path
    entry_point: str
    files: tuple[str, ...]
    """Every file in the bundle, relative POSIX paths, sorted."""


def runtime_requirements(pyproject: Path) -> list[str]:
    """The ``[project].dependencies`` of a pyproject.toml, in file order."""
    with pyproject.open("rb") as handle:
        data = tomllib.load(handle)
    dependencies = data.get("project", {}).get("dependencies")
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise BundleError(f"{pyproject} has no [project].dependencies list")
    return list(dependencies)


def render_requirements(requirements: list[str]) -> str:
    header = (
        "# Written by `callpipe deploy bundle` from pyproject.toml; edit pyproject.toml instead.\n"
    )
    return header + "".join(f"{line}\n" for line in requirements)


def build_bundle(
    step: str,
    out_dir: Path,
    *,
    repo_root: Path = REPO_ROOT,
    topology: Topology | None = None,
    replace: bool = False,
) -> Bundle:
    """Write the deployable source of ``step`` into ``out_dir``.

    ``out_dir`` must be missing or empty; with ``replace`` it may also be an earlier bundle
    (recognised by its marker file), which is removed first. Any other directory is refused
    so that a mistyped path cannot delete someone's files.
    """
    topology = topology or load_topology(repo_root / "schemas" / "pipeline.yaml")
    spec = topology.steps.get(step)
    if spec is None:
        raise BundleError(f"unknown step {step!r}; known: {', '.join(sorted(topology.steps))}")
    source = repo_root / spec.source
    package = repo_root / "shared" / PACKAGE
    schemas = repo_root / "schemas"
    if not (source / "main.py").is_file():
        raise BundleError(f"{source / 'main.py'} does not exist")
    if not (package / "__init__.py").is_file():
        raise BundleError(f"{package} is not the callpipe package")
    for reserved in (PACKAGE, "schemas", REQUIREMENTS, MARKER):
        if (source / reserved).exists():
            raise BundleError(
                f"{source / reserved} would collide with the bundle's own {reserved}; "
                "runtime dependencies belong in pyproject.toml"
            )

    out_dir = out_dir.resolve()
    for tree in (source, package, schemas):
        if out_dir.is_relative_to(tree.resolve()):
            raise BundleError(f"{out_dir} is inside {tree}, which the bundle copies")
    _prepare(out_dir, replace)

    ignore = shutil.ignore_patterns(*_IGNORED)
    shutil.copytree(source, out_dir, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(package, out_dir / PACKAGE, ignore=_package_ignore(package))
    for entry in SCHEMA_ENTRIES:
        origin = schemas / entry
        target = out_dir / "schemas" / entry
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=ignore)
        elif origin.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, target)
    requirements = runtime_requirements(repo_root / "pyproject.toml")
    (out_dir / REQUIREMENTS).write_text(render_requirements(requirements), encoding="utf-8")
    (out_dir / MARKER).write_text(f"{step}\n", encoding="utf-8")

    files = tuple(
        sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    )
    return Bundle(step=step, directory=out_dir, entry_point=spec.entry_point, files=files)


def _package_ignore(package: Path) -> Callable[[str, list[str]], set[str]]:
    ignore = shutil.ignore_patterns(*_IGNORED)

    def _ignored(directory: str, names: list[str]) -> set[str]:
        skipped = set(ignore(directory, names))
        if Path(directory).resolve() == package.resolve():
            skipped.update(name for name in names if name in DEV_ONLY_SUBPACKAGES)
        return skipped

    return _ignored


def _prepare(out_dir: Path, replace: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise BundleError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not replace:
            raise BundleError(f"{out_dir} is not empty; pass --replace to rebuild a bundle")
        if not (out_dir / MARKER).is_file():
            raise BundleError(f"{out_dir} is not empty and was not written by callpipe; refusing")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
