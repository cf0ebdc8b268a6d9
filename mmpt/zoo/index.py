"""The adapters zoo: a folder with `index.json` and artifact files (conventionally `artifacts/<name>.safetensors`).

`index.json` is `{"version": 1, "artifacts": [entry, ...]}`, sorted by name and written atomically. An entry
(`ZooEntry`) repeats what the artifact's own metadata says (task, tuner, head, backbone and its fingerprint,
domains, image size, metrics, created_at) and adds the entry name, the file's size and sha256, where the
file is (`path` relative to the zoo folder and/or a `url`: http(s):// or hf://owner/repo/file), its licence
and a description. `verify_zoo` re-checks all of it against the files (`hub.pull` fetches one, verified).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mmpt.artifacts import verify_artifact
from mmpt.download import sha256_file
from mmpt.errors import ArtifactError, ConfigError
from mmpt.fileio import atomic_write
from mmpt.registry import did_you_mean

INDEX_FILE = "index.json"
INDEX_VERSION = 1
ARTIFACTS_DIR = "artifacts"
SUFFIX = ".safetensors"
DEFAULT_LICENCE = "Apache-2.0"
# Index fields that must equal the artifact's own metadata (verify_zoo compares them).
CHECKED_METADATA = ("task", "tuner", "backbone_fingerprint", "domains", "image_size")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NONE = type(None)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "task": (str,),
    "tuner": (str,),
    "head": (str, _NONE),
    "backbone": (str,),
    "backbone_fingerprint": (str,),
    "domains": (list,),
    "image_size": (list,),
    "metrics": (dict,),
    "bytes": (int,),
    "sha256": (str,),
    "created_at": (str,),
    "path": (str, _NONE),
    "url": (str, _NONE),
    "licence": (str,),
    "description": (str, _NONE),
}
_ELEMENT_TYPES = {"domains": (str, "strings"), "image_size": (int, "integers")}
_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object", _NONE: "null"}


def format_metric(value: Any) -> str:
    """A metric value for tables: floats to 4 significant digits, containers as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def default_zoo_folder() -> Path:
    """The zoo used when none is given: `$MMPT_ZOO`, else `adapters_zoo` in the working directory."""
    return Path(os.environ.get("MMPT_ZOO") or "adapters_zoo")


# ---- names and URLs -----------------------------------------------------------------------------
def is_safe_name(name: object) -> bool:
    """Whether `name` can be a file name as is (see `check_name`); never raises."""
    return isinstance(name, str) and bool(_SAFE_NAME.fullmatch(name)) and ".." not in name


def check_name(name: str, *, what: str = "artifact name") -> str:
    """Returns `name` if it can be a file name as is: `[A-Za-z0-9._-]`, not starting with '.', without '..'.

    Raises:
        ConfigError: naming the value.
    """
    if not is_safe_name(name):
        raise ConfigError(
            f"{what} {name!r} is not allowed: use letters, digits, '.', '_' and '-', not starting with '.', "
            "without '..' or path separators.",
            hint="e.g. nyuv2-depth-lora-r8",
        )
    return name


def parse_hf_url(url: str) -> tuple[str, str]:
    """Splits `hf://owner/repo/path/in/repo.safetensors` into `("owner/repo", "path/in/repo.safetensors")`.

    Raises:
        ConfigError: not of that form, or a part is empty, '.', '..' or has characters outside [A-Za-z0-9._-].
    """
    parts = url.removeprefix("hf://").split("/")
    if not url.startswith("hf://") or len(parts) < 3 or not all(is_safe_name(p) for p in parts):
        raise ConfigError(
            f"{url!r} is not a Hugging Face file URL of the form hf://owner/repo/path/in/repo.safetensors "
            "(parts made of [A-Za-z0-9._-], no '..').",
            hint="e.g. hf://mmpt/nyuv2-adapters/nyuv2-depth-lora.safetensors",
        )
    return "/".join(parts[:2]), "/".join(parts[2:])


def check_url(url: str) -> str:
    """Returns `url` if it is an http(s):// URL with a host and a file path, or a valid hf:// URL.

    Raises:
        ConfigError: naming the value.
    """
    if url.startswith("hf://"):
        parse_hf_url(url)
        return url
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or not PurePosixPath(parsed.path).name:
        raise ConfigError(
            f"URL {url!r} is not an http(s):// URL of a file, nor hf://owner/repo/file.",
            hint="e.g. https://example.org/adapters/nyuv2-depth-lora.safetensors",
        )
    return url


def _check_relative_path(path: str, label: str) -> None:
    parts = PurePosixPath(path).parts
    if not path or "\\" in path or PurePosixPath(path).is_absolute() or ".." in parts:
        raise ConfigError(
            f"{label}: key 'path' is {path!r}; expected a path inside the zoo folder, relative and in posix form "
            "(e.g. artifacts/NAME.safetensors), without '..'."
        )


# ---- entries and the index ----------------------------------------------------------------------
def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)  # JSON true/false are not integers here


@dataclass
class ZooEntry:
    """One artifact of a zoo; all fields but name/path/url/licence/description come from its metadata."""

    name: str
    task: str
    tuner: str
    head: str | None
    backbone: str
    backbone_fingerprint: str
    domains: list[str]
    image_size: list[int]
    metrics: dict[str, Any]
    bytes: int
    sha256: str
    created_at: str
    path: str | None = None
    url: str | None = None
    licence: str = DEFAULT_LICENCE
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The index.json form (`path`, `url` and `description` left out when unset)."""
        optional = ("path", "url", "description")
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k not in optional}

    @classmethod
    def from_dict(cls, data: Any, *, where: str = INDEX_FILE) -> ZooEntry:
        """Builds an entry from its index.json form, checking every key.

        Args:
            data: one element of the index's `artifacts` list.
            where: names the entry in errors, e.g. "adapters_zoo/index.json, entry 3".

        Raises:
            ConfigError: a missing, unknown or mistyped key, an unsafe name or path, or neither path nor url.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} is {data!r}; expected an object with the keys {', '.join(fields)}.")
        label = f"{where} ('{data['name']}')" if isinstance(data.get("name"), str) else where
        for key in data:
            if key not in fields:
                raise ConfigError(
                    f"{label}: unknown key {key!r}.{did_you_mean(str(key), list(fields))}",
                    hint=f"valid keys: {', '.join(fields)}",
                )
        required = [k for k, f in fields.items() if f.default is dataclasses.MISSING]
        if missing := [k for k in required if k not in data]:
            raise ConfigError(
                f"{label}: missing key(s) {missing}.", hint="re-index the file: mmpt zoo add FILE --overwrite"
            )
        for key, value in data.items():
            if not _has_type(value, _FIELD_TYPES[key]):
                expected = " or ".join(_TYPE_NAMES[t] for t in _FIELD_TYPES[key])
                raise ConfigError(f"{label}: key {key!r} is {value!r}; expected {expected}.")
            if key in _ELEMENT_TYPES and not all(_has_type(v, (_ELEMENT_TYPES[key][0],)) for v in value):
                raise ConfigError(f"{label}: key {key!r} is {value!r}; expected a list of {_ELEMENT_TYPES[key][1]}.")
        check_name(data["name"], what=f"{label}: key 'name'")
        if not _SHA256.fullmatch(data["sha256"]):
            raise ConfigError(f"{label}: key 'sha256' is {data['sha256']!r}; expected 64 lowercase hex digits.")
        if data["bytes"] < 0:
            raise ConfigError(f"{label}: key 'bytes' is {data['bytes']}; expected a file size >= 0.")
        if data.get("path") is not None:
            _check_relative_path(data["path"], label)
        if not data.get("path") and not data.get("url"):
            raise ConfigError(f"{label}: neither key 'path' nor key 'url' is set; an entry needs one of them.")
        return cls(**data)


@dataclass
class Zoo:
    """A zoo folder and its index entries."""

    folder: Path
    entries: list[ZooEntry] = field(default_factory=list)

    @property
    def index_path(self) -> Path:
        return self.folder / INDEX_FILE

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def get(self, name: str) -> ZooEntry:
        """The entry called `name`.

        Raises:
            ConfigError: no such entry (with a did-you-mean and the valid names).
        """
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise ConfigError(
            f"No artifact named {name!r} in {self.index_path}.{did_you_mean(name, self.names())}",
            hint=f"names in this zoo: {', '.join(sorted(self.names())) or '(none)'}",
        )

    def put(self, entry: ZooEntry) -> None:
        """Adds `entry`, replacing the entry of the same name if there is one."""
        self.entries = [e for e in self.entries if e.name != entry.name] + [entry]

    def save(self) -> Path:
        """Writes index.json (entries sorted by name) atomically; returns its path."""
        self.entries.sort(key=lambda e: e.name)
        index = {"version": INDEX_VERSION, "artifacts": [e.to_dict() for e in self.entries]}
        text = json.dumps(index, indent=2, ensure_ascii=False) + "\n"
        return atomic_write(self.index_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_zoo(folder: str | Path, *, missing_ok: bool = False) -> Zoo:
    """Reads a zoo's index.json.

    Args:
        folder: the zoo folder.
        missing_ok: return an empty zoo when the folder has no index.json yet.

    Raises:
        ConfigError: index.json is missing, not JSON, of another version, or has an invalid or duplicate entry.
    """
    folder = Path(folder)
    index = folder / INDEX_FILE
    if not index.is_file():
        if missing_ok:
            return Zoo(folder)
        raise ConfigError(
            f"{index} does not exist: {folder} is not an mmpt zoo.",
            hint="point --zoo (or $MMPT_ZOO) at a folder with an index.json, or start one: "
            f"mmpt zoo add ARTIFACT --zoo {folder}",
        )
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{index} is not valid JSON ({e}).", hint="restore it from version control") from e
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise ConfigError(f'{index} must be an object {{"version": 1, "artifacts": [...]}}; it is not.')
    if data.get("version") != INDEX_VERSION:
        newer = isinstance(data.get("version"), int) and data["version"] > INDEX_VERSION
        raise ConfigError(
            f"{index} has version {data.get('version')!r}; this mmpt reads zoo index version {INDEX_VERSION}.",
            hint="upgrade mmpt (pip install -U mmpt)" if newer else 'set "version": 1 after checking the entries',
        )
    entries = [ZooEntry.from_dict(item, where=f"{index}, entry {i}") for i, item in enumerate(data["artifacts"])]
    names = [e.name for e in entries]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{index} lists the name(s) {duplicates} more than once; names must be unique.")
    return Zoo(folder, entries)


# ---- adding and verifying -----------------------------------------------------------------------
def entry_for_artifact(
    name: str,
    file: str | Path,
    *,
    path: str | None = None,
    url: str | None = None,
    licence: str = DEFAULT_LICENCE,
    description: str | None = None,
) -> ZooEntry:
    """An index entry describing the artifact `file` (checked whole: metadata and content_sha256).

    Raises:
        ArtifactError: the file is missing, damaged or not an mmpt artifact.
    """
    metadata = verify_artifact(file)
    head = metadata["head_config"]
    return ZooEntry(
        name=check_name(name),
        task=metadata["task"],
        tuner=metadata["tuner"],
        head=head["name"] if head else None,
        backbone=metadata["backbone"],
        backbone_fingerprint=metadata["backbone_fingerprint"],
        domains=list(metadata["domains"]),
        image_size=list(metadata["image_size"]),
        metrics=dict(metadata["metrics"]),
        bytes=Path(file).stat().st_size,
        sha256=sha256_file(file),
        created_at=metadata["created_at"],
        path=path,
        url=url,
        licence=licence,
        description=description,
    )


def add_artifact(
    zoo_folder: str | Path,
    artifact_path: str | Path,
    *,
    name: str | None = None,
    licence: str = DEFAULT_LICENCE,
    description: str | None = None,
    overwrite: bool = False,
) -> ZooEntry:
    """Copies a verified artifact to `<zoo>/artifacts/<name>.safetensors` and indexes it.

    Args:
        zoo_folder: the zoo; created (with an empty index) if it has no index.json yet.
        artifact_path: the artifact file.
        name: entry name (default: the file name without `.safetensors`).
        licence: licence of the weights (SPDX id).
        description: one line shown by `mmpt zoo show` and on the model card.
        overwrite: replace an entry of the same name.

    Returns:
        The new entry.

    Raises:
        ConfigError: an invalid name, or a name already in the zoo without `overwrite`.
        ArtifactError: the file is missing, damaged or not an mmpt artifact.
    """
    artifact_path = Path(artifact_path)
    name = check_name(name if name is not None else artifact_path.name.removesuffix(SUFFIX))
    zoo = load_zoo(zoo_folder, missing_ok=True)
    if name in zoo.names() and not overwrite:
        raise ConfigError(f"{zoo.index_path} already has an artifact named {name!r}.", hint="pass --overwrite")
    verify_artifact(artifact_path)  # before copying, so that errors name the user's file
    relative = f"{ARTIFACTS_DIR}/{name}{SUFFIX}"
    dest = zoo.folder / relative
    if not dest.exists() or not dest.samefile(artifact_path):
        atomic_write(dest, lambda tmp: shutil.copyfile(artifact_path, tmp))
    entry = entry_for_artifact(name, dest, path=relative, licence=licence, description=description)
    zoo.put(entry)
    zoo.save()
    return entry


def entry_problems(zoo: Zoo, entry: ZooEntry) -> list[str]:
    """What is wrong with the local file of `entry` (empty when it matches the index and is intact)."""
    if entry.path is None:
        return []
    file = zoo.folder / entry.path
    label = f"{entry.path} (entry '{entry.name}')"
    if not file.is_file():
        return [f"{label}: the file is missing."]
    problems = []
    if (size := file.stat().st_size) != entry.bytes:
        problems.append(f"{label}: {size:,} bytes, the index says {entry.bytes:,}.")
    if (digest := sha256_file(file)) != entry.sha256:
        problems.append(f"{label}: sha256 {digest} differs from the index's {entry.sha256}.")
    try:
        metadata = verify_artifact(file)
    except ArtifactError as e:
        return [*problems, f"{label}: {e.message}"]
    for key in CHECKED_METADATA:
        if metadata[key] != getattr(entry, key):
            problems.append(f"{label}: the file's {key} is {metadata[key]!r}, the index says {getattr(entry, key)!r}.")
    return problems


def verify_zoo(folder: str | Path) -> list[str]:
    """Checks every entry of a zoo against its file, and looks for files the index does not list.

    Returns:
        One line per problem; empty when the zoo is sound.

    Raises:
        ConfigError: index.json itself is missing or invalid.
    """
    zoo = load_zoo(folder)
    problems = []
    for entry in zoo.entries:
        problems += entry_problems(zoo, entry)
        if entry.url is not None:
            try:
                check_url(entry.url)
            except ConfigError as e:
                problems.append(f"entry '{entry.name}': {e.message}")
    indexed = {(zoo.folder / e.path).resolve() for e in zoo.entries if e.path}
    artifacts = zoo.folder / ARTIFACTS_DIR
    for file in sorted(artifacts.rglob("*")) if artifacts.is_dir() else []:
        if file.is_file() and file.resolve() not in indexed:
            problems.append(
                f"{file.relative_to(zoo.folder).as_posix()}: not in {INDEX_FILE}; index it with "
                f"`mmpt zoo add {file} --zoo {zoo.folder}` or delete it."
            )
    return problems
