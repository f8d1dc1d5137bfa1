"""Checkpoint names and the Hub repos they live in: `check_name`, `hub_repo_id` (read by the hub and the cards)."""

from __future__ import annotations

import os
import re

DEFAULT_NAMESPACE = "genapp-lab"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def check_name(name: str) -> str:
    """`name` if it is a checkpoint name (`^[a-z0-9][a-z0-9_.-]*$`, no "..", no "--", <= 89 chars), else ValueError."""
    if not (isinstance(name, str) and NAME_RE.fullmatch(name) and ".." not in name and "--" not in name
            and len(name) <= 89 and not name.endswith((".", "-"))):
        raise ValueError("checkpoint names look like 'ddpm-moons' (lowercase, digits, '_', '.', '-'), "
                         f"got {name!r:.100}")
    return name


def hub_repo_id(name: str) -> str:
    """The Hub repo of checkpoint `name`: `<GENAPP_HUB_NAMESPACE or genapp-lab>/genapp-<name>`."""
    namespace = os.environ.get("GENAPP_HUB_NAMESPACE") or DEFAULT_NAMESPACE
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", namespace):
        raise ValueError(f"GENAPP_HUB_NAMESPACE must be a Hub user or organisation name, got {namespace!r}")
    return f"{namespace}/genapp-{check_name(name)}"
