"""Publish the shipped checkpoints to the Hub: `checkpoints/NAME` -> `<namespace>/genapp-NAME`, one repo each.

    python -m genapp publish --namespace NS [--only ddpm-moons nice-moons]

A repo whose files already equal what a push would upload (`hub.upload_files`: the card retitled for the repo) is
left alone; the others get one commit each. Either way the repo's revision (commit id) is reported, so a user can
pin it: `genapp.load(name, revision=...)`, `DDPM.from_pretrained(repo_id, revision=...)`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from genapp.io import hub


@dataclass(frozen=True)
class Published:
    """One checkpoint's outcome: its repo, the repo's commit id after publishing, and whether we pushed."""

    name: str
    repo_id: str
    revision: str
    pushed: bool


def _same(content: bytes, etag: str | None) -> bool:
    """The Hub's ETag of a file is its sha256 (LFS files) or its git blob id (small files): either may match."""
    if not etag:
        return False
    blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()  # noqa: S324 (git's id, not security)
    return etag.strip('"') in (hashlib.sha256(content).hexdigest(), blob)


def _remote_revision(repo_id: str, files: dict[str, bytes], token: str | None, timeout: float) -> str | None:
    """The repo's commit id on main if every file there equals `files`, else None (no repo, a file missing or
    different)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint, commit = hub._endpoint(), None
    for filename, content in files.items():
        url = hf_hub_url(repo_id, filename, revision="main", endpoint=endpoint)
        try:
            meta = get_hf_file_metadata(url, token=token, timeout=timeout, endpoint=endpoint)
        except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
            return None
        if not _same(content, meta.etag) or meta.size not in (None, len(content)):
            return None
        commit = meta.commit_hash
    return commit


def publish(namespace: str, only: list[str] | None = None, token: str | None = None,
            private: bool = False) -> list[Published]:
    """Push every local checkpoint (or the names in `only`) to `<namespace>/genapp-NAME`, skipping unchanged ones.

    Each folder is loaded strictly first (`hub.push`); offline (HF_HUB_OFFLINE=1) nothing is contacted.
    """
    from httpx2 import TransportError
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(namespace, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", namespace):
        raise ValueError(f"namespace must be a Hub user or organisation name, got {namespace!r:.100}")
    names = list(only) if only else hub._local_names()
    folders = {hub.check_name(name): hub.checkpoints_dir() / name for name in names}
    if missing := [name for name, folder in folders.items() if not folder.is_dir()]:
        raise hub.CheckpointNotFoundError(f"no checkpoint {', '.join(missing)} in {hub.checkpoints_dir()} "
                                          f"(local checkpoints: {', '.join(hub._local_names()) or 'none'})")
    if hub._offline():
        raise hub.HubError(f"cannot publish to {namespace}: the Hub is off (HF_HUB_OFFLINE=1)")
    timeout, out = hub._timeout(None), []
    for name, folder in folders.items():
        repo_id = f"{namespace}/genapp-{name}"
        validate_repo_id(repo_id)
        hub.load_dir(folder, family=hub.family_of_name(name))  # never compare (or push) a malformed folder
        try:
            revision = _remote_revision(repo_id, hub.upload_files(Path(folder), repo_id), token, timeout)
            if revision is not None:
                out.append(Published(name, repo_id, revision, pushed=False))
                continue
            url = hub.push(folder, repo_id, token=token, private=private)
        except (HfHubHTTPError, TransportError) as error:
            raise hub.HubError(f"publishing {repo_id} on {hub._endpoint()} failed: {type(error).__name__}: "
                               f"{error}") from error
        out.append(Published(name, repo_id, url.rstrip("/").rsplit("/", 1)[1], pushed=True))
    return out
