"""Where the W&B server is, whether it can be reached, and which mode a run gets: no W&B import.

    resolve_mode()               # WANDB_MODE wins; else online when logged in, else offline
    is_logged_in()               # credentials on this machine (key, token, netrc); no network call
    probe(server_url(), 5.0)     # None when a TCP connection opens, else why not

``neurotrain fit``, ``neurotrain sync`` and the W&B sweep backend all decide through these.
"""

from __future__ import annotations

import netrc
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

WandbMode = Literal["online", "offline", "disabled"]
DEFAULT_BASE_URL = "https://api.wandb.ai"


def server_url(env: Mapping[str, str] | None = None) -> str:
    """``$WANDB_BASE_URL``, else W&B's cloud."""
    env = os.environ if env is None else env
    return env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def resolve_mode(env: Mapping[str, str] | None = None) -> WandbMode:
    """``WANDB_MODE`` when set (``dryrun`` = offline, ``run`` = online); else online iff logged in."""
    env = os.environ if env is None else env
    raw = (env.get("WANDB_MODE") or "").strip().lower()
    if raw in ("offline", "dryrun"):
        return "offline"
    if raw in ("online", "run"):
        return "online"
    if raw == "disabled" or (env.get("WANDB_DISABLED") or "").lower() in ("true", "1", "yes"):
        return "disabled"
    return "online" if is_logged_in(env) else "offline"


def is_logged_in(env: Mapping[str, str] | None = None) -> bool:
    """Whether W&B credentials exist locally (API key, identity token, netrc entry); no network call.

    The key is not validated (that needs the server); a wrong key shows up as an online init failure,
    which `RunWandbLogger` answers by falling back to offline.
    """
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(server_url(env)).hostname or ""
    path = Path(env["NETRC"]) if env.get("NETRC") else Path.home() / ".netrc"
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def probe(base_url: str, timeout_s: float) -> str | None:
    """None when a TCP connection to the server opens within ``timeout_s``; else why not."""
    parsed = urlparse(base_url)
    host = parsed.hostname
    if not host:
        return f"not a URL: {base_url!r}"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
