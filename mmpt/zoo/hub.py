"""Artifacts in and out of a zoo: `pull` (a zoo entry, an http(s) URL or `hf://owner/repo/file`), checked, and
`push` to the Hugging Face Hub with a generated model card.

`huggingface_hub` (installed with peft and timm) is imported only when a function here uses it.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

from mmpt.artifacts import describe_artifact, verify_artifact
from mmpt.download import cache_dir, download, sha256_file
from mmpt.errors import ArtifactError, ConfigError, DownloadError, IntegrityError, MmptError
from mmpt.zoo.index import (
    SUFFIX,
    ZooEntry,
    atomic_write,
    check_name,
    check_url,
    default_zoo_folder,
    entry_for_artifact,
    entry_problems,
    format_metric,
    is_safe_name,
    load_zoo,
    parse_hf_url,
)

_REPO_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*/[A-Za-z0-9_-][A-Za-z0-9._-]*")
_LOGIN_HINT = "log in with `hf auth login`, or pass --token / set HF_TOKEN (a token with write access to push)"


# ---- the Hugging Face Hub -----------------------------------------------------------------------
def hf_download(url: str) -> Path:
    """Downloads `hf://owner/repo/path/in/repo.safetensors` into the Hugging Face cache.

    Returns:
        The cached file (do not edit it: `pull` copies it).

    Raises:
        ConfigError: a malformed URL.
        DownloadError: the Hub client failed (no such repo or file, network, authentication).
    """
    repo_id, filename = parse_hf_url(url)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, library_name="mmpt"))
    except (OSError, ValueError) as e:  # the hub's HTTP errors are OSErrors, its validation errors ValueErrors
        raise DownloadError(
            f"Downloading {filename} from Hugging Face repo {repo_id} failed: {e}",
            hint=f"check the repo and file on https://huggingface.co/{repo_id}; for a private repo, {_LOGIN_HINT}",
        ) from e


# ---- pulling -------------------------------------------------------------------------------------
def pull(
    ref: str, *, zoo_folder: str | Path | None = None, dest_dir: str | Path | None = None, progress: bool = True
) -> Path:
    """Fetches one artifact, checks it, and returns its local path.

    Args:
        ref: an entry name of the zoo (its `path` is copied, else its `url` downloaded), an http(s):// URL,
            or `hf://owner/repo/path/in/repo.safetensors`.
        zoo_folder: the zoo that names are looked up in (default `default_zoo_folder()`).
        dest_dir: where the file goes (default `cache_dir()/"zoo"`).
        progress: show a progress bar while downloading.

    Returns:
        `dest_dir/<entry name>.safetensors`, or `dest_dir/<the URL's last path component>`.

    Raises:
        ConfigError: an unknown name, a malformed URL, or a file name that is not a plain `*.safetensors` name.
        DownloadError: the download failed.
        IntegrityError: the file's sha256 is not the index's (the file is deleted).
        ArtifactError: the file is not an intact mmpt artifact (it is deleted).
    """
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir() / "zoo"
    if "://" in ref:
        dest = dest_dir / _checked_file_name(_url_file_name(check_url(ref)), ref)
        return _fetch(ref, dest, sha256=None, size=None, progress=progress)
    check_name(ref, what="zoo entry name")
    zoo = load_zoo(zoo_folder if zoo_folder is not None else default_zoo_folder())
    entry = zoo.get(ref)
    dest = dest_dir / _checked_file_name(entry.name + SUFFIX, ref)
    local = zoo.folder / entry.path if entry.path else None
    if local is not None and local.is_file():
        if dest.exists() and dest.samefile(local):
            raise ConfigError(f"{dest} is the zoo's own file; pulling it onto itself.", hint="choose another --dest")
        atomic_write(dest, lambda tmp: shutil.copyfile(local, tmp))
        return _checked(dest, source=str(local), sha256=entry.sha256)
    if entry.url is None:
        raise ArtifactError(
            f"{local} (entry '{entry.name}' of {zoo.index_path}) is missing, and the entry has no url.",
            hint=f"run `mmpt zoo verify --zoo {zoo.folder}`; restore the file or re-add it",
        )
    return _fetch(check_url(entry.url), dest, sha256=entry.sha256, size=entry.bytes, progress=progress)


def _fetch(url: str, dest: Path, *, sha256: str | None, size: int | None, progress: bool) -> Path:
    if sha256 is not None and dest.is_file() and sha256_file(dest) == sha256:
        return _checked(dest, source=str(dest), sha256=None)  # already pulled
    if url.startswith("hf://"):
        cached = hf_download(url)
        atomic_write(dest, lambda tmp: shutil.copyfile(cached, tmp))
    else:
        download(url, dest, sha256=sha256, size=size, progress=progress)
    return _checked(dest, source=url, sha256=sha256)


def _checked(path: Path, *, source: str, sha256: str | None) -> Path:
    """Keeps `path` only if it has the expected sha256 and is an intact mmpt artifact; deletes it otherwise."""
    if sha256 is not None and (actual := sha256_file(path)) != sha256:
        path.unlink()
        raise IntegrityError(
            f"{source}: sha256 {actual} does not match the index's {sha256}. The file was deleted.",
            hint="the file changed after it was indexed; check it with `mmpt zoo verify`, or re-add it",
        )
    try:
        verify_artifact(path)
    except ArtifactError as e:
        path.unlink()
        raise ArtifactError(
            f"{source} did not give an intact mmpt artifact: {e.message} The file was deleted.",
            hint="check the reference; if it is right, the published file is damaged: ask its publisher to fix it",
        ) from e
    return path


def _checked_file_name(file_name: str, source: str) -> str:
    if not is_safe_name(file_name) or not file_name.endswith(SUFFIX) or file_name == SUFFIX:
        raise ConfigError(
            f"{source!r} would be saved as {file_name!r}; a pulled file must be a plain name ending in {SUFFIX} "
            "(no path separators, no '..', no leading '.').",
            hint="pull mmpt artifacts only: NAME (from `mmpt zoo ls`), https://.../NAME.safetensors or "
            "hf://owner/repo/NAME.safetensors",
        )
    return file_name


def _url_file_name(url: str) -> str:
    if url.startswith("hf://"):
        return PurePosixPath(parse_hf_url(url)[1]).name
    return urllib.parse.unquote(PurePosixPath(urllib.parse.urlparse(url).path).name)


# ---- pushing ------------------------------------------------------------------------------------
def push(
    zoo_folder_or_artifact: str | Path,
    name: str,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    api: Any = None,
) -> str:
    """Uploads an artifact as `<name>.safetensors` and a generated model card `README.md` to a Hub model repo.

    Args:
        zoo_folder_or_artifact: a zoo folder (the artifact is its entry `name`) or an artifact file.
        name: the zoo entry name; also the file name in the repo.
        repo_id: "owner/name"; the repo is created if it does not exist.
        token: Hub token (default: the logged-in one, or $HF_TOKEN).
        private: create the repo as private.
        api: an `huggingface_hub.HfApi`-like client (default `HfApi(token=token)`; tests pass a fake).

    Returns:
        The hf:// URL of the uploaded file, for `mmpt zoo pull` or a zoo entry's `url`.

    Raises:
        ConfigError: a bad repo id or name, an unknown entry, or an entry without a local file.
        ArtifactError: the artifact is damaged or does not match its index entry.
        MmptError: the Hub refused (authentication, permissions, network).
    """
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise ConfigError(f"Hub repo id {repo_id!r} is not of the form owner/name.", hint="e.g. --repo alice/adapters")
    file, entry = _local_artifact(Path(zoo_folder_or_artifact), check_name(name))
    file_in_repo = f"{name}{SUFFIX}"
    card = model_card(entry, describe_artifact(file), repo_id, file_in_repo)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        api.upload_file(
            path_or_fileobj=str(file),
            path_in_repo=file_in_repo,
            repo_id=repo_id,
            token=token,
            commit_message=f"mmpt: upload {file_in_repo}",
        )
        api.upload_file(
            path_or_fileobj=card.encode("utf-8"),
            path_in_repo="README.md",
            repo_id=repo_id,
            token=token,
            commit_message=f"mmpt: model card for {file_in_repo}",
        )
    except (OSError, ValueError) as e:  # the hub's HTTP errors are OSErrors, its validation errors ValueErrors
        raise MmptError(f"Pushing {file_in_repo} to Hugging Face repo {repo_id} failed: {e}", hint=_LOGIN_HINT) from e
    return f"hf://{repo_id}/{file_in_repo}"


def _local_artifact(source: Path, name: str) -> tuple[Path, ZooEntry]:
    """The file to push and its entry: the zoo's entry `name`, or an entry made for a plain artifact file."""
    if source.is_file():
        return source, entry_for_artifact(name, source)
    zoo = load_zoo(source)
    entry = zoo.get(name)
    if entry.path is None:
        raise ConfigError(
            f"Entry '{name}' of {zoo.index_path} has only a url ({entry.url}); there is no local file to push."
        )
    if problems := entry_problems(zoo, entry):
        raise ArtifactError(" ".join(problems), hint=f"fix the zoo first: mmpt zoo verify --zoo {zoo.folder}")
    return zoo.folder / entry.path, entry


def model_card(entry: ZooEntry, info: dict[str, Any], repo_id: str, file_in_repo: str) -> str:
    """The README.md of a pushed artifact: Hub front matter, what it is, its metrics and how to use it.

    Args:
        entry: the artifact's zoo entry.
        info: `describe_artifact(file)` (tuner config, parameter counts, mmpt version).
        repo_id: the Hub repo.
        file_in_repo: the artifact's file name in the repo.
    """
    meta = info["metadata"]
    sizes = info["sizes"]
    tags = "\n".join(f"- {tag}" for tag in dict.fromkeys(["mmpt", "multimae", "peft", entry.tuner, entry.task]))
    metrics = "\n".join(f"| {k} | {format_metric(v)} |" for k, v in sorted(entry.metrics.items()))
    url = f"hf://{repo_id}/{file_in_repo}"
    rgbd = " --depth photo_depth.png" if "depth" in entry.domains else ""
    rows = [
        ("task", entry.task),
        ("tuner", f"{entry.tuner} `{json.dumps(meta['tuner_config'], sort_keys=True)}`"),
        ("head", entry.head or "none"),
        ("backbone", f"`{entry.backbone}`"),
        ("backbone fingerprint", f"`{entry.backbone_fingerprint}`"),
        ("domains", ", ".join(entry.domains)),
        ("image size", "x".join(map(str, entry.image_size))),
        ("parameters stored", f"tuner {sizes['tuner']['parameters']:,}, head {sizes['head']['parameters']:,}"),
        ("file", f"`{file_in_repo}`, {entry.bytes:,} bytes"),
        ("sha256", f"`{entry.sha256}`"),
        ("created", f"{entry.created_at} with mmpt {meta['mmpt_version']}"),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return f"""---
library_name: mmpt
tags:
{tags}
license: {entry.licence.lower()}
# base_model: none on the Hub; this adapter binds to the MultiMAE backbone '{entry.backbone}'
# with fingerprint {entry.backbone_fingerprint} (loading refuses any other base)
---

# {entry.name}

A `{entry.tuner}` adapter and `{entry.head or "no"}` head for **{entry.task}** on a frozen MultiMAE backbone,
made with mmpt (parameter-efficient fine-tuning for MultiMAE).{" " + entry.description if entry.description else ""}

| | |
|---|---|
{table}

## Metrics

| metric | value |
|---|---|
{metrics or "| (none recorded) | |"}

## Use

With mmpt installed, `mmpt zoo pull` fetches the file, checks its integrity and prints its local path:

```bash
mmpt zoo pull {url}
mmpt predict "$(mmpt zoo pull {url})" photo.png{rgbd} --out predictions/
```

Loading checks that the backbone's fingerprint is `{entry.backbone_fingerprint}`: load `{entry.backbone}`
with domains {entry.domains} and image size {entry.image_size}.
"""
