"""Pretrained names: checkpoints/ first, then the Hugging Face Hub; push. The folder format and its strict
loader live in `genapp.io.checkpoint` (re-exported here: `save`, `load_dir`, `CheckpointError`).

Names: `checkpoints/NAME` (env GENAPP_CHECKPOINTS moves the folder; an installed genapp carries the shipped ones
as package data), else the Hub repo `<namespace>/genapp-NAME`,
namespace from env GENAPP_HUB_NAMESPACE (default "genapp-lab"). Hub settings are read at call time: HF_ENDPOINT,
HF_HUB_CACHE / HF_HOME, HF_HUB_OFFLINE (then only the cache is used), HF_HUB_DOWNLOAD_TIMEOUT (default 10 s).
"""

from __future__ import annotations

import math
import os
import re
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genapp.families import family_of_name
from genapp.io.cards import card_metrics
from genapp.io.checkpoint import (  # noqa: F401  (re-exported: the public API names them under genapp.io.hub)
    FILES,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_INT,
    MAX_PARAMETERS,
    MAX_WEIGHTS_BYTES,
    SCHEDULER_FILE,
    CheckpointError,
    load_dir,
    read_config,
    save,
)
from genapp.io.names import DEFAULT_NAMESPACE, NAME_RE, check_name, hub_repo_id  # noqa: F401  (public here too)

DEFAULT_TIMEOUT_S = 10.0
MIN_DOWNLOAD_RATE = 100_000  # bytes/s a download may not fall below (on top of 3 x the timeout)
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
_CACHE: dict[tuple[str, str | None], nn.Module] = {}
_LOCK = threading.Lock()


class HubError(OSError):
    """The Hub could not give us a checkpoint (unreachable, refused, offline and not cached)."""


class HubTimeoutError(HubError, TimeoutError):
    """The Hub did not answer within the timeout, and the checkpoint is not in the cache."""


class CheckpointNotFoundError(HubError, LookupError):
    """No such checkpoint: not in checkpoints/ and no such repo, revision or file on the Hub."""


# -- names and settings ----------------------------------------------------------------------------------------
def _check_revision(revision: str | None) -> None:
    if revision is not None and not (isinstance(revision, str) and REVISION_RE.fullmatch(revision)
                                     and ".." not in revision and len(revision) <= 255):
        raise ValueError(f"revision must be a branch, tag or commit id, got {revision!r:.100}")


def checkpoints_dir() -> Path:
    """The local checkpoints folder: env GENAPP_CHECKPOINTS; else the copy an installed genapp carries as package
    data (genapp/checkpoints, see pyproject.toml); else, in a checkout, checkpoints/ beside the genapp package."""
    if os.environ.get("GENAPP_CHECKPOINTS"):
        return Path(os.environ["GENAPP_CHECKPOINTS"])
    package = Path(__file__).resolve().parents[1]
    packaged = package / "checkpoints"
    return packaged if packaged.is_dir() else package.parent / "checkpoints"


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline() -> bool:
    from huggingface_hub import constants

    return _is_true(os.environ.get("HF_HUB_OFFLINE")) or constants.is_offline_mode()


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _cache_dir() -> str:
    from huggingface_hub import constants

    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expanduser(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"])
    return os.path.join(os.path.expanduser(env["HF_HOME"]), "hub") if env.get("HF_HOME") else constants.HF_HUB_CACHE


def _timeout(timeout: float | None) -> float:
    given = timeout if timeout is not None else os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or DEFAULT_TIMEOUT_S
    try:
        value = float(given)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"timeout (or HF_HUB_DOWNLOAD_TIMEOUT) must be a positive number of seconds, got {given!r}")
    return value


# -- names: checkpoints/ first, then the Hub -------------------------------------------------------------------
def load(name: str, revision: str | None = None, *, timeout: float | None = None) -> nn.Module:
    """The checkpoint `name`, in eval mode on the CPU: `checkpoints/NAME`, else the Hub repo `hub_repo_id(name)`.

    A `revision` (branch, tag or commit) always goes to the Hub (or its cache): local folders have no revisions.
    Offline (HF_HUB_OFFLINE=1, or the Hub unreachable or silent for `timeout` s) the Hub's cache is used.
    Models are cached in memory by (name, revision) and the same object is returned every time: treat it as
    read-only; `copy.deepcopy` it before training it or moving it to another device.
    """
    check_name(name)
    _check_revision(revision)
    with _LOCK:
        if (name, revision) not in _CACHE:
            folder = checkpoints_dir() / name
            if revision is None and folder.is_dir():
                model = load_dir(folder, family=family_of_name(name))
            else:
                folder = _download(hub_repo_id(name), revision, _timeout(timeout), name=name)
                model = load_dir(folder, family=family_of_name(name))
            _CACHE[name, revision] = model
        return _CACHE[name, revision]


def clear_cache() -> None:
    """Forget the models `load` has cached."""
    with _LOCK:
        _CACHE.clear()


def _local_names() -> list[str]:
    root = checkpoints_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if NAME_RE.fullmatch(p.name) and (p / "config.json").is_file())


def available() -> list[dict[str, Any]]:
    """The local checkpoints, sorted by name: dicts of name, family, dataset, path and metrics (the numbers of the
    card's model-index, `genapp.io.cards.card_metrics`), plus `error` when config.json is unreadable (then family
    and dataset come from the name)."""
    entries = []
    for name in _local_names():
        folder = checkpoints_dir() / name
        entry: dict[str, Any] = {"name": name, "family": family_of_name(name),
                                 "dataset": name.split("-", 1)[1] if "-" in name else "", "path": str(folder)}
        try:
            raw = read_config(folder / "config.json")
            entry["family"] = raw.get("family") or entry["family"]
            entry["dataset"] = raw.get("dataset") or entry["dataset"]
        except CheckpointError as error:
            entry["error"] = str(error)
        entry["metrics"] = card_metrics(folder / "README.md")
        entries.append(entry)
    return entries


def _not_found(name: str | None, what: str) -> str:
    """The reason first (what the Hub said), then the local names: a shortened message keeps the reason.
    `name` None: a repo asked for by its id (from_pretrained), not by a checkpoint name."""
    if name is None:
        return what
    local = ", ".join(_local_names()) or "none"
    return f"unknown checkpoint {name!r}: {what}; nor is it in {checkpoints_dir()} (local checkpoints: {local})"


def from_pretrained(model_cls: type[nn.Module], model_id: str | Path, *, revision: str | None = None,
                    cache_dir: str | Path | None = None, force_download: bool = False, token: str | bool | None = None,
                    local_files_only: bool = False, map_location: str | torch.device = "cpu", strict: bool = True,
                    timeout: float | None = None, **model_kwargs: Any) -> nn.Module:
    """What `DDPM.from_pretrained` and `Flow.from_pretrained` do: a checkpoint folder, or a Hub repo id fetched
    by the same download as `load` (config.json + model.safetensors, header and size checks, timeouts, the cache),
    then read by the one strict loader `load_dir`. The mixin's own path is never taken: it would parse
    config.json unchecked and load with strict=False (and fall back to pickled weights).

    The folder must hold a `model_cls` (a DDPM asked of a flow's folder is a CheckpointError). Config overrides
    (the mixin's **model_kwargs) are refused: config.json alone says what the weights are.
    """
    if model_kwargs:
        raise TypeError(f"{model_cls.__name__}.from_pretrained takes no config overrides ({', '.join(model_kwargs)}):"
                        " config.json alone defines the model")
    if strict is not True:
        raise ValueError("genapp loads checkpoints strictly (strict=True): every weight present, none unexpected")
    if os.path.isdir(model_id):
        return load_dir(model_id, map_location, model_cls=model_cls)
    from huggingface_hub.utils import validate_repo_id

    repo_id = str(model_id)
    if repo_id.count("/") != 1:
        raise ValueError(f"{repo_id!r:.100} is neither a checkpoint folder nor a Hub repo id 'namespace/name'")
    validate_repo_id(repo_id)
    _check_revision(revision)
    folder = _download(repo_id, revision, _timeout(timeout), token=token, cache_dir=cache_dir,
                       force_download=force_download, local_files_only=local_files_only)
    return load_dir(folder, map_location, model_cls=model_cls)


def _download(repo_id: str, revision: str | None, timeout: float, *, name: str | None = None,
              token: str | bool | None = None, cache_dir: str | Path | None = None, force_download: bool = False,
              local_files_only: bool = False) -> Path:
    """Fetch config.json, model.safetensors and README.md of `repo_id` into the Hub cache; return their folder.

    `name`: the checkpoint name asked for (`load`), for messages that list the local ones. `token`, `cache_dir`,
    `force_download`, `local_files_only` as in huggingface_hub (`local_files_only`: the cache only, as offline).

    First one HEAD request for model.safetensors with `timeout` and no retries (huggingface_hub retries a
    silent server for minutes). Then hf_hub_download per file (config.json at `revision`, which records the
    branch or tag in the cache; the others pinned to its commit), in a worker thread given
    3 * timeout + size / MIN_DOWNLOAD_RATE seconds in all, so a server that stalls mid-download ends too.
    """
    from httpx2 import TimeoutException, TransportError
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rev, endpoint, cache_dir = revision or "main", _endpoint(), str(cache_dir or _cache_dir())
    where = f"{repo_id}@{rev} on {endpoint}"

    def fetch(filename: str, revision: str, local_files_only: bool = False) -> Path:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                                    etag_timeout=timeout, local_files_only=local_files_only, token=token,
                                    force_download=force_download and not local_files_only))

    def from_cache() -> Path | None:
        try:
            folder = fetch("config.json", rev, True).parent
            fetch("model.safetensors", folder.name, True)
        except EntryNotFoundError:  # LocalEntryNotFoundError: not cached
            return None
        return folder

    if _offline() or local_files_only:
        if (folder := from_cache()) is not None:
            return folder
        off = "local_files_only=True" if local_files_only and not _offline() else "the Hub is off (HF_HUB_OFFLINE=1)"
        raise HubError(_not_found(name, f"{off}: {repo_id}@{rev} is not in the cache {cache_dir}"))
    try:
        url = hf_hub_url(repo_id, "model.safetensors", revision=rev, endpoint=endpoint)
        size = get_hf_file_metadata(url, token=token, timeout=timeout, endpoint=endpoint).size or 0
    except RevisionNotFoundError as error:
        raise CheckpointNotFoundError(f"revision {rev!r} does not exist in {repo_id} on {endpoint}") from error
    except RepositoryNotFoundError as error:  # also a private repo without a valid token, and GatedRepoError
        raise CheckpointNotFoundError(_not_found(name, f"there is no Hub repo {repo_id} on {endpoint} (or it is "
                                                       "private and no valid token was sent)")) from error
    except EntryNotFoundError as error:
        raise CheckpointError(f"{where}: model.safetensors missing (genapp never loads pickled weights)") from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        hint = ": check the token (HF_TOKEN or `hf auth login`)" if status in (401, 403) else ""
        raise HubError(f"the Hub refused {where}: HTTP {status}{hint}") from error
    except (TransportError, OfflineModeIsEnabled) as error:
        if (folder := from_cache()) is not None:
            return folder
        if isinstance(error, TimeoutException):
            raise HubTimeoutError(f"the Hub at {endpoint} did not answer within {timeout:g} s (HF_HUB_DOWNLOAD_"
                                  f"TIMEOUT) for {repo_id}@{rev}, and it is not in the cache {cache_dir}") from error
        raise HubError(f"cannot reach the Hub at {endpoint} for {repo_id}@{rev} ({type(error).__name__}: {error}), "
                       f"and it is not in the cache {cache_dir}") from error

    # The sizes are known from the HEAD answers: what no genapp model needs is refused before it is downloaded.
    try:
        url = hf_hub_url(repo_id, "config.json", revision=rev, endpoint=endpoint)
        config_size = get_hf_file_metadata(url, token=token, timeout=timeout, endpoint=endpoint).size or 0
    except EntryNotFoundError as error:
        raise CheckpointNotFoundError(f"{where} has no config.json: not a genapp checkpoint") from error
    except (HfHubHTTPError, TransportError) as error:
        raise HubError(f"the Hub did not answer for config.json of {where}: {type(error).__name__}") from error
    if size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{where}: model.safetensors is {size:,} bytes, more than MAX_PARAMETERS weights take "
                              f"({MAX_WEIGHTS_BYTES:,}); not downloaded")
    if config_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{where}: config.json is {config_size:,} bytes, more than a config needs "
                              f"({MAX_CONFIG_BYTES:,}); not downloaded")

    def fetch_all() -> Path:
        try:
            folder = fetch("config.json", rev).parent  # the snapshot folder is named after the commit
        except EntryNotFoundError as error:
            raise CheckpointNotFoundError(f"{where} has no config.json: not a genapp checkpoint") from error
        fetch("model.safetensors", folder.name)
        try:
            fetch("README.md", folder.name)
        except EntryNotFoundError:
            pass  # the card is documentation; loading does not need it
        return folder

    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(_call(fetch_all)), daemon=True)
    worker.start()
    worker.join(deadline := 3 * timeout + size / MIN_DOWNLOAD_RATE)
    if worker.is_alive():
        raise HubTimeoutError(f"downloading {where} did not finish within {deadline:.3g} s (3 x HF_HUB_DOWNLOAD_"
                              f"TIMEOUT + {size} bytes at {MIN_DOWNLOAD_RATE // 1000} kB/s)")
    if isinstance(error := outcome.get("error"), CheckpointNotFoundError):
        raise error
    if error is not None:
        raise HubError(f"downloading {where} failed: {type(error).__name__}: {error}") from error
    return outcome["value"]


def _call(function) -> dict[str, Any]:
    try:
        return {"value": function()}
    except Exception as error:  # handed to the waiting thread
        return {"error": error}


def upload_files(folder: Path, repo_id: str) -> dict[str, bytes]:
    """What a push of `folder` to `repo_id` uploads: config.json, model.safetensors, README.md and, for a DDPM,
    scheduler_config.json; the card retitled for `repo_id` when it names another repo (`cards.retitle`)."""
    from genapp.io.cards import retitle

    files = {name: (folder / name).read_bytes() for name in (*FILES, SCHEDULER_FILE) if (folder / name).is_file()}
    card = files["README.md"].decode("utf-8")
    if f"name: {repo_id}\n" not in card and "model-index:" in card:
        files["README.md"] = retitle(card, repo_id).encode("utf-8")
    return files


def push(name_or_dir: str | Path, repo_id: str | None = None, token: str | None = None,
         private: bool = False) -> str:
    """Upload a checkpoint folder (`upload_files`) to the Hub; return the commit URL.

    `name_or_dir`: a path (contains a '/', or is a Path) or a name in checkpoints/. `repo_id` defaults to
    `hub_repo_id(name)`; `token` to huggingface_hub's usual sources (HF_TOKEN, `hf auth login`). The folder is
    loaded with `load_dir` first: a malformed checkpoint is never pushed.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import validate_repo_id

    if isinstance(name_or_dir, Path) or "/" in str(name_or_dir) or os.sep in str(name_or_dir):
        folder = Path(name_or_dir)
    else:
        folder = checkpoints_dir() / check_name(str(name_or_dir))
        if not folder.is_dir():
            raise CheckpointNotFoundError(_not_found(str(name_or_dir), "push uploads local checkpoints only"))
    if repo_id is None:
        repo_id = hub_repo_id(folder.name)
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'namespace/name', got {repo_id!r}")
    validate_repo_id(repo_id)
    if not isinstance(private, bool) or not (token is None or isinstance(token, str)):
        raise TypeError("private must be a bool and token a str or None")
    if not (folder / "README.md").is_file():
        raise CheckpointError(f"{folder / 'README.md'}: missing: a pushed checkpoint carries its model card")
    load_dir(folder, family=family_of_name(folder.name))
    if _offline():
        raise HubError(f"cannot push {folder} to {repo_id}: the Hub is off (HF_HUB_OFFLINE=1)")
    api = HfApi(endpoint=_endpoint(), token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, [CommitOperationAdd(name, content)
                                           for name, content in upload_files(folder, repo_id).items()],
                                 commit_message=f"Upload {folder.name} (genapp)")
    except HfHubHTTPError as error:
        raise HubError(f"pushing {folder} to {repo_id} on {_endpoint()} failed: {error}") from error
    return info.commit_url
