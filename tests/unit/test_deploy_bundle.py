"""callpipe.deploy.bundle: the deployable source directory of each step."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callpipe.cli import app
from callpipe.deploy.bundle import (
    DEV_ONLY_SUBPACKAGES,
    MARKER,
    BundleError,
    build_bundle,
    runtime_requirements,
)
from callpipe.topology import REPO_ROOT, Topology, load_topology

TOPOLOGY = load_topology()
STEPS = sorted(TOPOLOGY.steps)


def _requirement_lines(directory: Path) -> list[str]:
    text = (directory / "requirements.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _tree_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@pytest.mark.parametrize("step", STEPS)
def test_bundle_has_main_package_schemas_and_requirements(tmp_path: Path, step: str) -> None:
    spec = TOPOLOGY.steps[step]
    bundle = build_bundle(step, tmp_path / step)

    assert bundle.entry_point == spec.entry_point
    files = set(bundle.files)
    assert {"main.py", "requirements.txt", "callpipe/__init__.py", "schemas/pipeline.yaml"} <= files
    assert files == {
        p.relative_to(bundle.directory).as_posix()
        for p in bundle.directory.rglob("*")
        if p.is_file()
    }
    assert (bundle.directory / "main.py").read_bytes() == (
        REPO_ROOT / spec.source / "main.py"
    ).read_bytes()
    for name in files:
        if name.startswith("callpipe/"):
            assert (bundle.directory / name).read_bytes() == (
                REPO_ROOT / "shared" / name
            ).read_bytes()
    assert not [f for f in files if "__pycache__" in f or f.endswith((".pyc", ".pyo"))]
    assert not [
        f for f in files if f.split("/")[:2] in (["callpipe", d] for d in DEV_ONLY_SUBPACKAGES)
    ]
    assert not [f for f in files if f.startswith("schemas/spanner")]


def test_requirements_are_the_runtime_dependencies_of_pyproject(tmp_path: Path) -> None:
    with (REPO_ROOT / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    bundle = build_bundle(STEPS[0], tmp_path / "b")
    assert _requirement_lines(bundle.directory) == project["dependencies"]
    assert runtime_requirements(REPO_ROOT / "pyproject.toml") == project["dependencies"]
    dev_only = {req.split(">")[0].split("=")[0] for req in project["optional-dependencies"]["dev"]}
    bundled = {req.split(">")[0].split("=")[0].split("<")[0] for req in project["dependencies"]}
    assert not dev_only & bundled
    assert "functions-framework" in bundled


_IMPORT_PROBE = """
import json, sys
sys.path.insert(0, ".")
import functions_framework
app = functions_framework.create_app(target=sys.argv[1], source="main.py", signature_type=sys.argv[2])
print(json.dumps({
    "app": type(app).__name__,
    "callpipe": sorted(
        getattr(module, "__file__", None) or ""
        for name, module in sys.modules.items()
        if name == "callpipe" or name.startswith("callpipe.")
    ),
}))
"""


@pytest.mark.parametrize("step", STEPS)
def test_bundled_main_loads_under_functions_framework(tmp_path: Path, step: str) -> None:
    spec = TOPOLOGY.steps[step]
    bundle = build_bundle(step, tmp_path / step)
    signature = "http" if spec.trigger.type == "http" else "cloudevent"
    # A clean environment: no emulator hosts, no stack.env, nothing from the caller's shell.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "ENVIRONMENT": "test"}
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, spec.entry_point, signature],
        cwd=bundle.directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    # an `asgi` step's function is asynchronous: functions-framework builds a Starlette app
    assert loaded["app"] == ("Starlette" if spec.asgi else "Flask")
    # Every callpipe module came from the bundle, none from the repository checkout.
    assert loaded["callpipe"]
    for module_file in loaded["callpipe"]:
        assert Path(module_file).resolve().is_relative_to(bundle.directory), module_file


def test_bundled_code_never_imports_dev_only_subpackages(tmp_path: Path) -> None:
    bundle = build_bundle(STEPS[0], tmp_path / "b")
    forbidden = {f"callpipe.{name}" for name in DEV_ONLY_SUBPACKAGES}
    offenders: list[str] = []
    for path in bundle.directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for module in modules:
                if any(module == f or module.startswith(f + ".") for f in forbidden):
                    offenders.append(f"{path.relative_to(bundle.directory)}: {module}")
    assert offenders == []


def test_bundles_are_reproducible(tmp_path: Path) -> None:
    # Terraform names the uploaded zip after its hash: same sources, same bundle.
    first = build_bundle(STEPS[-1], tmp_path / "one")
    second = build_bundle(STEPS[-1], tmp_path / "two")
    assert first.files == second.files
    assert _tree_digest(first.directory) == _tree_digest(second.directory)


def test_refuses_a_non_empty_directory_it_did_not_write(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(BundleError, match="not empty"):
        build_bundle(STEPS[0], target)
    with pytest.raises(BundleError, match="not written by callpipe"):
        build_bundle(STEPS[0], target, replace=True)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_replace_rebuilds_an_earlier_bundle(tmp_path: Path) -> None:
    target = tmp_path / "b"
    build_bundle(STEPS[0], target)
    (target / "stale.py").write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(BundleError, match="--replace"):
        build_bundle(STEPS[0], target)
    bundle = build_bundle(STEPS[0], target, replace=True)
    assert "stale.py" not in bundle.files
    assert (target / MARKER).read_text(encoding="utf-8") == f"{STEPS[0]}\n"


def test_refuses_unknown_step_and_output_inside_sources(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="unknown step 'nope'"):
        build_bundle("nope", tmp_path / "b")
    with pytest.raises(BundleError, match="inside"):
        build_bundle(STEPS[0], REPO_ROOT / "shared" / "callpipe" / "bundle-here")
    assert not (REPO_ROOT / "shared" / "callpipe" / "bundle-here").exists()


def _fake_repo(root: Path, function_files: dict[str, str]) -> Topology:
    (root / "shared" / "callpipe").mkdir(parents=True)
    (root / "shared" / "callpipe" / "__init__.py").write_text("", encoding="utf-8")
    (root / "schemas").mkdir()
    shutil.copyfile(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    source = root / "functions" / "solo"
    source.mkdir(parents=True)
    (source / "main.py").write_text("def solo(request):\n    return 'ok'\n", encoding="utf-8")
    for name, text in function_files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text, encoding="utf-8")
    return Topology.model_validate(
        {
            "version": 1,
            "defaults": {
                "ack_deadline_seconds": 60,
                "message_retention_seconds": 3600,
                "retry": {"minimum_backoff_seconds": 10, "maximum_backoff_seconds": 600},
                "max_delivery_attempts": 5,
            },
            "topics": {"t": {"description": "t", "message": "T"}},
            "steps": {
                "solo": {
                    "source": "functions/solo",
                    "entry_point": "solo",
                    "trigger": {"type": "http"},
                    "publishes": ["t"],
                    "local_port": 9000,
                }
            },
            "holds": {"t.hold": {"topic": "t", "description": "kept"}},
        }
    )


def test_function_helper_modules_are_bundled(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    topology = _fake_repo(repo, {"helpers.py": "X = 1\n", "__pycache__/junk.pyc": "x"})
    bundle = build_bundle("solo", tmp_path / "out", repo_root=repo, topology=topology)
    assert "helpers.py" in bundle.files
    assert not [f for f in bundle.files if "__pycache__" in f]
    # Optional schema entries that do not exist are simply absent.
    assert not [f for f in bundle.files if f.startswith("schemas/")]


def test_a_function_cannot_bring_its_own_requirements(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    topology = _fake_repo(repo, {"requirements.txt": "requests\n"})
    with pytest.raises(BundleError, match=r"pyproject\.toml"):
        build_bundle("solo", tmp_path / "out", repo_root=repo, topology=topology)
    assert not (tmp_path / "out").exists()


def test_cli_lists_steps_and_bundles(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["deploy", "steps"])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.split() == list(TOPOLOGY.steps)
    pubsub = runner.invoke(app, ["deploy", "steps", "--trigger", "pubsub"])
    assert pubsub.stdout.split() == [
        n for n, s in TOPOLOGY.steps.items() if s.trigger.type == "pubsub"
    ]

    out = tmp_path / "bundle"
    result = runner.invoke(app, ["deploy", "bundle", STEPS[0], str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "main.py").is_file()
    again = runner.invoke(app, ["deploy", "bundle", STEPS[0], str(out)])
    assert again.exit_code == 1
    assert "--replace" in again.output
