"""The adapters zoo: indexing verified artifacts, catching damage, safe pulls (copy, URL, hf://) and Hub pushes."""

from __future__ import annotations

import json
import re
import shutil
import struct

import huggingface_hub
import pytest
from typer.testing import CliRunner

from mmpt import load_backbone
from mmpt.artifacts import load_artifact, read_metadata, save_artifact
from mmpt.cli.app import app
from mmpt.download import sha256_file
from mmpt.errors import ArtifactError, BaseMismatchError, ConfigError, DownloadError, IntegrityError, MmptError
from mmpt.heads import build_head
from mmpt.testing import make_tiny_checkpoint
from mmpt.tuners import build
from mmpt.zoo import Zoo, ZooEntry, add_artifact, load_zoo, pull, push, verify_zoo
from tests.loopback import closed_port_url, loopback_server

TINY = {"dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16, "domains": ("rgb", "depth")}
WIDE = {"COLUMNS": "200"}


def _backbone(checkpoint):
    return load_backbone(checkpoint, num_heads=TINY["num_heads"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("zoo-ckpt") / "tiny.pth", seed=0, **TINY)


@pytest.fixture(scope="module")
def artifacts(checkpoint, tmp_path_factory):
    """Two tiny artifacts as `mmpt tune` writes them: a depth deep-prompt and a semseg LoRA."""
    folder = tmp_path_factory.mktemp("zoo-artifacts")
    specs = {
        "depth-prompt": ("deep_prompt", {"num_tokens": 2}, "depth", 1, {"delta1": 0.5, "rmse": 0.75}),
        "seg-lora": ("lora", {"rank": 2, "targets": ["qkv"]}, "semseg", 4, {"miou": 0.25}),
    }
    paths = {}
    for name, (tuner_name, config, task, out_channels, metrics) in specs.items():
        backbone = _backbone(checkpoint)
        tuner = build(tuner_name, **config)
        tuner.apply(backbone)
        head = build_head("linear", dim=TINY["dim"], patch_size=16, out_channels=out_channels, domains=["rgb"])
        paths[name] = save_artifact(folder / f"{name}.safetensors", tuner, head, backbone, task=task, metrics=metrics)
    return paths


@pytest.fixture
def zoo(artifacts, tmp_path):
    folder = tmp_path / "zoo"
    for path in artifacts.values():
        add_artifact(folder, path)
    return folder


def _flip_last_byte(path):
    """Flips one bit of the last tensor byte (the data region follows the 8-byte length and the JSON header)."""
    data = bytearray(path.read_bytes())
    assert len(data) - 1 >= 8 + struct.unpack("<Q", bytes(data[:8]))[0]
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_index(folder, entry_name, **changes):
    """Edits one entry of index.json in place; a None value deletes the key."""
    index = json.loads((folder / "index.json").read_text())
    entry = next(e for e in index["artifacts"] if e["name"] == entry_name)
    entry.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del entry[key]
    (folder / "index.json").write_text(json.dumps(index))


# ---- add, index, load ---------------------------------------------------------------------------
def test_add_copies_the_artifact_and_indexes_its_own_metadata(zoo, artifacts):
    index = json.loads((zoo / "index.json").read_text())
    assert index["version"] == 1 and [e["name"] for e in index["artifacts"]] == ["depth-prompt", "seg-lora"]
    entry = load_zoo(zoo).get("depth-prompt")
    source = artifacts["depth-prompt"]
    metadata = read_metadata(source)
    copied = zoo / "artifacts" / "depth-prompt.safetensors"
    assert entry.path == "artifacts/depth-prompt.safetensors" and copied.read_bytes() == source.read_bytes()
    assert entry.sha256 == sha256_file(source) and entry.bytes == source.stat().st_size
    assert (entry.task, entry.tuner, entry.head, entry.backbone) == ("depth", "deep_prompt", "linear", "tiny.pth")
    assert entry.backbone_fingerprint == metadata["backbone_fingerprint"] == _backbone_fingerprint(source)
    assert entry.domains == ["rgb", "depth"] and entry.image_size == [224, 224]
    assert entry.metrics == {"delta1": 0.5, "rmse": 0.75} and entry.created_at == metadata["created_at"]
    assert entry.licence == "Apache-2.0" and entry.url is None and entry.description is None
    assert sorted(p.name for p in zoo.rglob("*")) == [  # no temp files left behind
        "artifacts",
        "depth-prompt.safetensors",
        "index.json",
        "seg-lora.safetensors",
    ]


def _backbone_fingerprint(path):
    return read_metadata(path)["backbone_fingerprint"]


def test_an_entry_survives_a_dict_round_trip_and_leaves_unset_keys_out(zoo):
    entry = load_zoo(zoo).get("seg-lora")
    data = entry.to_dict()
    assert "url" not in data and "description" not in data and data["head"] == "linear"
    assert ZooEntry.from_dict(data) == entry


def test_add_refuses_an_existing_name_unless_overwrite(zoo, artifacts):
    with pytest.raises(ConfigError, match="already has an artifact named 'seg-lora'"):
        add_artifact(zoo, artifacts["seg-lora"])
    entry = add_artifact(
        zoo, artifacts["depth-prompt"], name="seg-lora", licence="CC-BY-4.0", description="x", overwrite=True
    )
    reloaded = load_zoo(zoo).get("seg-lora")
    assert reloaded == entry and (reloaded.task, reloaded.licence, reloaded.description) == ("depth", "CC-BY-4.0", "x")
    assert verify_zoo(zoo) == []


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "a..b", "sp ace", ""])
def test_add_refuses_names_that_are_not_plain_file_names(artifacts, tmp_path, name):
    with pytest.raises(ConfigError, match="is not allowed") as error:
        add_artifact(tmp_path / "zoo", artifacts["seg-lora"], name=name)
    assert repr(name) in str(error.value) and not (tmp_path / "zoo").exists()


def test_add_refuses_a_damaged_artifact_and_creates_nothing(artifacts, tmp_path):
    damaged = tmp_path / "damaged.safetensors"
    shutil.copyfile(artifacts["seg-lora"], damaged)
    _flip_last_byte(damaged)
    with pytest.raises(ArtifactError, match="content_sha256") as error:
        add_artifact(tmp_path / "zoo", damaged)
    assert str(damaged) in str(error.value) and not (tmp_path / "zoo").exists()


def test_unknown_names_get_a_did_you_mean(zoo):
    with pytest.raises(ConfigError, match="Did you mean 'depth-prompt'") as error:
        load_zoo(zoo).get("depth-promt")
    assert "depth-prompt, seg-lora" in error.value.hint


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (None, "index.json does not exist"),
        ("{not json", "index.json is not valid JSON"),
        ({"version": 2, "artifacts": []}, "has version 2"),
        ({"version": 1, "artifacts": [{"nme": "x"}]}, r"entry 0: unknown key 'nme'\. Did you mean 'name'\?"),
        ({"version": 1, "artifacts": [{"name": "x"}]}, r"entry 0 \('x'\): missing key\(s\) \['task'"),
    ],
    ids=["missing", "not-json", "newer-version", "unknown-key", "missing-keys"],
)
def test_a_bad_index_is_refused_naming_the_file(tmp_path, index, expected):
    if index is not None:
        (tmp_path / "index.json").write_text(index if isinstance(index, str) else json.dumps(index))
    with pytest.raises(ConfigError, match=expected) as error:
        load_zoo(tmp_path)
    assert str(tmp_path / "index.json") in str(error.value)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"name": "../evil"}, "key 'name' '../evil' is not allowed"),
        ({"path": "../outside.safetensors"}, "key 'path' is '../outside.safetensors'"),
        ({"path": "/etc/passwd"}, "key 'path' is '/etc/passwd'"),
        ({"bytes": "12"}, "key 'bytes' is '12'; expected an integer"),
        ({"domains": ["rgb", 1]}, "key 'domains' is \\['rgb', 1\\]; expected a list of strings"),
        ({"sha256": "abc"}, "key 'sha256' is 'abc'; expected 64 lowercase hex digits"),
        ({"path": None}, "neither key 'path' nor key 'url'"),
    ],
    ids=["name", "path-up", "path-absolute", "bytes-type", "domains-type", "sha256", "no-location"],
)
def test_a_bad_entry_is_refused_naming_file_entry_and_key(zoo, changes, expected):
    _edit_index(zoo, "seg-lora", **changes)
    with pytest.raises(ConfigError, match=expected) as error:
        load_zoo(zoo)
    assert f"{zoo / 'index.json'}, entry 1" in str(error.value)


def test_the_index_is_rewritten_sorted_and_atomically(zoo, monkeypatch):
    before = (zoo / "index.json").read_text()
    loaded = load_zoo(zoo)
    loaded.entries.reverse()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("mmpt.fileio.os.replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        loaded.save()
    assert (zoo / "index.json").read_text() == before and sorted(p.name for p in zoo.iterdir()) == [
        "artifacts",
        "index.json",
    ]
    monkeypatch.undo()
    Zoo(zoo, list(reversed(load_zoo(zoo).entries))).save()
    assert (zoo / "index.json").read_text() == before


# ---- verify -------------------------------------------------------------------------------------
def test_a_sound_zoo_verifies_clean(zoo):
    assert verify_zoo(zoo) == []


def test_a_flipped_tensor_byte_fails_verify_naming_the_file(zoo):
    _flip_last_byte(zoo / "artifacts" / "seg-lora.safetensors")
    problems = verify_zoo(zoo)
    assert len(problems) == 2
    assert all(p.startswith("artifacts/seg-lora.safetensors (entry 'seg-lora')") for p in problems)
    assert "differs from the index's" in problems[0] and "does not match its content_sha256" in problems[1]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"sha256": "0" * 64}, f"sha256 [0-9a-f]{{64}} differs from the index's {'0' * 64}"),
        ({"bytes": 12}, "bytes, the index says 12"),
        ({"task": "depth"}, "the file's task is 'semseg', the index says 'depth'"),
        ({"backbone_fingerprint": "f" * 64}, "the file's backbone_fingerprint is '[0-9a-f]{64}', the index says"),
        ({"image_size": [32, 32]}, r"the file's image_size is \[224, 224\], the index says \[32, 32\]"),
        ({"path": "artifacts/gone.safetensors"}, "artifacts/gone.safetensors .entry 'seg-lora'.: the file is missing"),
        ({"url": "ftp://example.org/x.safetensors"}, "entry 'seg-lora': URL 'ftp://example.org/x.safetensors'"),
    ],
    ids=["sha256", "bytes", "task", "fingerprint", "image-size", "missing-file", "bad-url"],
)
def test_an_index_that_disagrees_with_its_file_fails_verify(zoo, changes, expected):
    _edit_index(zoo, "seg-lora", **changes)
    problems = verify_zoo(zoo)
    if "path" in changes:  # the file that lost its entry is now reported too
        assert problems.pop().startswith("artifacts/seg-lora.safetensors: not in index.json")
    assert len(problems) == 1 and "depth-prompt" not in problems[0]
    assert re.search(expected, problems[0]), problems[0]


def test_files_the_index_does_not_list_are_reported(zoo, artifacts):
    shutil.copyfile(artifacts["seg-lora"], zoo / "artifacts" / "stray.safetensors")
    (zoo / "artifacts" / "notes.txt").write_text("x")
    problems = verify_zoo(zoo)
    assert [p.split(":")[0] for p in problems] == ["artifacts/notes.txt", "artifacts/stray.safetensors"]
    assert all("not in index.json" in p for p in problems)


# ---- pull ---------------------------------------------------------------------------------------
def test_pull_by_name_copies_the_file_and_checks_its_sha256(zoo, tmp_path):
    dest = tmp_path / "pulled"
    path = pull("seg-lora", zoo_folder=zoo, dest_dir=dest, progress=False)
    assert path == dest / "seg-lora.safetensors"
    assert path.read_bytes() == (zoo / "artifacts" / "seg-lora.safetensors").read_bytes()
    path.unlink()
    _flip_last_byte(zoo / "artifacts" / "seg-lora.safetensors")
    with pytest.raises(IntegrityError, match="does not match the index's") as error:
        pull("seg-lora", zoo_folder=zoo, dest_dir=dest, progress=False)
    assert str(zoo / "artifacts" / "seg-lora.safetensors") in str(error.value) and list(dest.iterdir()) == []


def test_pull_by_name_uses_mmpt_zoo_and_the_cache_by_default(zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("MMPT_ZOO", str(zoo))
    monkeypatch.setenv("MMPT_CACHE", str(tmp_path / "cache"))
    assert pull("depth-prompt", progress=False) == tmp_path / "cache" / "zoo" / "depth-prompt.safetensors"


def test_pull_of_a_url_downloads_and_verifies_it(artifacts, tmp_path):
    body = artifacts["depth-prompt"].read_bytes()
    with loopback_server({"files/depth-prompt.safetensors": body}) as server:
        path = pull(f"{server.url}/files/depth-prompt.safetensors", dest_dir=tmp_path, progress=False)
    assert path == tmp_path / "depth-prompt.safetensors" and path.read_bytes() == body


def test_pull_of_an_indexed_url_with_a_wrong_sha256_leaves_no_file(zoo, artifacts, tmp_path):
    body = artifacts["seg-lora"].read_bytes()
    _edit_index(zoo, "seg-lora", path=None, sha256="0" * 64)
    dest = tmp_path / "pulled"
    with loopback_server({"seg-lora.safetensors": body}) as server:
        _edit_index(zoo, "seg-lora", url=f"{server.url}/seg-lora.safetensors")
        with pytest.raises(IntegrityError, match=f"does not match the expected {'0' * 64}"):
            pull("seg-lora", zoo_folder=zoo, dest_dir=dest, progress=False)
        assert list(dest.iterdir()) == []  # neither the file nor a .part
        _edit_index(zoo, "seg-lora", sha256=sha256_file(artifacts["seg-lora"]))
        assert pull("seg-lora", zoo_folder=zoo, dest_dir=dest, progress=False).read_bytes() == body
        assert [name for name, _ in server.requests] == ["seg-lora.safetensors"] * 2


def test_a_pulled_url_that_is_not_an_intact_artifact_is_deleted(artifacts, tmp_path):
    damaged = bytearray(artifacts["seg-lora"].read_bytes())
    damaged[-1] ^= 0x01
    with loopback_server({"bad.safetensors": bytes(damaged), "junk.safetensors": b"<html>"}) as server:
        for name, expected in [("bad", "content_sha256"), ("junk", "not a readable safetensors")]:
            with pytest.raises(ArtifactError, match=expected) as error:
                pull(f"{server.url}/{name}.safetensors", dest_dir=tmp_path, progress=False)
            assert "The file was deleted" in str(error.value) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "ref",
    [
        "../x.safetensors",
        "a/b",
        ".hidden",
        "hf://o/r/../../x.safetensors",
        "hf://o/r",
        "{url}/x.bin",
        "{url}/.x.safetensors",
        "{url}/%2e%2e%2fx.safetensors",
        "ftp://example.org/x.safetensors",
    ],
)
def test_pull_refuses_refs_that_are_not_plain_safetensors_names(zoo, tmp_path, ref):
    ref = ref.format(url=closed_port_url())  # refused before any connection: a request would fail differently
    with pytest.raises(ConfigError) as error:
        pull(ref, zoo_folder=zoo, dest_dir=tmp_path / "dest", progress=False)
    assert repr(ref) in str(error.value) and not (tmp_path / "dest").exists()


def test_hf_urls_are_pulled_through_hf_hub_download(artifacts, tmp_path, monkeypatch):
    calls = []

    def fake_hf_hub_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(artifacts["seg-lora"])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    path = pull("hf://alice/adapters/nyuv2/seg-lora.safetensors", dest_dir=tmp_path, progress=False)
    assert calls == [("alice/adapters", "nyuv2/seg-lora.safetensors")]
    assert path == tmp_path / "seg-lora.safetensors" and path.read_bytes() == artifacts["seg-lora"].read_bytes()


def test_hf_errors_name_the_repo_and_suggest_logging_in(tmp_path, monkeypatch):
    def missing(repo_id, filename, **kwargs):
        raise OSError("401 Client Error: Repository Not Found")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing)
    with pytest.raises(DownloadError, match="Hugging Face repo alice/private failed: 401") as error:
        pull("hf://alice/private/x.safetensors", dest_dir=tmp_path, progress=False)
    assert "hf auth login" in error.value.hint and list(tmp_path.iterdir()) == []


def test_a_zoo_artifact_refuses_a_different_backbone_naming_both_fingerprints(zoo, checkpoint, tmp_path):
    path = pull("depth-prompt", zoo_folder=zoo, dest_dir=tmp_path, progress=False)
    other = _backbone(make_tiny_checkpoint(tmp_path / "other.pth", seed=1, **TINY))
    expected = load_zoo(zoo).get("depth-prompt").backbone_fingerprint
    assert expected == _backbone(checkpoint).fingerprint != other.fingerprint
    with pytest.raises(BaseMismatchError) as error:
        load_artifact(path, other)
    assert expected in str(error.value) and other.fingerprint in str(error.value)


# ---- push ---------------------------------------------------------------------------------------
class FakeHubApi:
    """Records the HfApi calls push makes; `fail` makes create_repo raise like the hub client does."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if self.fail:
            raise self.fail

    def upload_file(self, **kwargs):
        self.calls.append(("upload_file", kwargs))


def test_push_creates_the_repo_and_uploads_the_artifact_and_a_model_card(zoo):
    api = FakeHubApi()
    url = push(zoo, "depth-prompt", "alice/adapters", private=True, api=api)
    assert url == "hf://alice/adapters/depth-prompt.safetensors"
    assert [name for name, _ in api.calls] == ["create_repo", "upload_file", "upload_file"]
    create, artifact, card = (kwargs for _, kwargs in api.calls)
    assert create["repo_id"] == "alice/adapters" and create["exist_ok"] is True and create["private"] is True
    assert artifact["path_or_fileobj"] == str(zoo / "artifacts" / "depth-prompt.safetensors")
    assert artifact["path_in_repo"] == "depth-prompt.safetensors" and card["path_in_repo"] == "README.md"
    text = card["path_or_fileobj"].decode()
    entry = load_zoo(zoo).get("depth-prompt")
    assert text.startswith("---\nlibrary_name: mmpt\ntags:\n- mmpt\n- multimae\n- peft\n- deep_prompt\n- depth\n")
    assert "license: apache-2.0" in text and entry.backbone_fingerprint in text and entry.sha256 in text
    assert "| delta1 | 0.5 |" in text and "| rmse | 0.75 |" in text
    assert "| parameters stored | tuner 128, head 8,512 |" in text  # 2 blocks x 2 prompts x 32; 256x32 + 256 + 2x32
    assert f"mmpt zoo pull {url}" in text and f'mmpt predict "$(mmpt zoo pull {url})"' in text


def test_push_of_a_plain_artifact_file_needs_no_zoo(artifacts):
    api = FakeHubApi()
    assert push(artifacts["seg-lora"], "my-seg", "alice/adapters", api=api) == "hf://alice/adapters/my-seg.safetensors"
    assert api.calls[1][1]["path_or_fileobj"] == str(artifacts["seg-lora"])
    assert "| miou | 0.25 |" in api.calls[2][1]["path_or_fileobj"].decode()


def test_push_wraps_hub_errors_naming_the_repo(zoo):
    with pytest.raises(MmptError, match="to Hugging Face repo alice/adapters failed: 401 Unauthorized") as error:
        push(zoo, "seg-lora", "alice/adapters", api=FakeHubApi(fail=OSError("401 Unauthorized")))
    assert "--token" in error.value.hint and "hf auth login" in error.value.hint


def test_push_refuses_a_bad_repo_id_or_a_damaged_entry_before_uploading(zoo):
    api = FakeHubApi()
    with pytest.raises(ConfigError, match="'alice' is not of the form owner/name"):
        push(zoo, "seg-lora", "alice", api=api)
    _flip_last_byte(zoo / "artifacts" / "seg-lora.safetensors")
    with pytest.raises(ArtifactError, match="content_sha256"):
        push(zoo, "seg-lora", "alice/adapters", api=api)
    assert api.calls == []


# ---- command line -------------------------------------------------------------------------------
def _cli(*args, **env):
    return CliRunner().invoke(app, ["zoo", *map(str, args)], env={**WIDE, **env})


def test_cli_ls_and_show_print_the_index(zoo):
    listed = _cli("ls", "--zoo", zoo)
    assert listed.exit_code == 0, listed.output
    assert "depth-prompt" in listed.output and "delta1 0.5, rmse 0.75" in listed.output and "miou 0.25" in listed.output
    as_json = json.loads(_cli("ls", "--json", MMPT_ZOO=str(zoo)).output)
    assert as_json == [e.to_dict() for e in load_zoo(zoo).entries]
    entry = load_zoo(zoo).get("seg-lora")
    shown = _cli("show", "seg-lora", "--zoo", zoo)
    assert shown.exit_code == 0 and entry.backbone_fingerprint in shown.output and entry.sha256 in shown.output
    assert json.loads(_cli("show", "seg-lora", "--json", "--zoo", zoo).output) == entry.to_dict()
    unknown = _cli("show", "seg-lor", "--zoo", zoo)
    assert unknown.exit_code == 2 and "Did you mean 'seg-lora'" in unknown.output


def test_cli_verify_exits_1_on_a_damaged_zoo(zoo):
    ok = _cli("verify", "--zoo", zoo)
    assert ok.exit_code == 0 and "2 artifacts OK" in ok.output
    _flip_last_byte(zoo / "artifacts" / "depth-prompt.safetensors")
    damaged = _cli("verify", "--zoo", zoo)
    assert damaged.exit_code == 1 and "artifacts/depth-prompt.safetensors" in damaged.output
    assert "2 problem(s)" in damaged.output


def test_cli_add_pull_and_push(artifacts, tmp_path, monkeypatch):
    folder = tmp_path / "zoo"
    added = _cli("add", artifacts["seg-lora"], "--zoo", folder, "--name", "seg", "--description", "tiny")
    assert added.exit_code == 0, added.output
    assert "Added seg (semseg, lora)" in added.output and load_zoo(folder).get("seg").description == "tiny"
    again = _cli("add", artifacts["seg-lora"], "--zoo", folder, "--name", "seg")
    assert again.exit_code == 2 and "--overwrite" in again.output
    pulled = _cli("pull", "seg", "--zoo", folder, "--dest", tmp_path / "out")
    assert pulled.exit_code == 0 and pulled.output.strip() == str(tmp_path / "out" / "seg.safetensors")
    api = FakeHubApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: api)
    pushed = _cli("push", "seg", "--repo", "alice/adapters", "--zoo", folder)
    assert pushed.exit_code == 0, pushed.output
    assert "mmpt zoo pull hf://alice/adapters/seg.safetensors" in pushed.output and len(api.calls) == 3
