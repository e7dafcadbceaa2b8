"""Is the Hugging Face hub usable from here? Asked once, quickly, before a command relies on it.

Without a network, `datasets` and `huggingface_hub` retry for tens of seconds and then raise a
many-frame ConnectionError. One TCP connection to the hub's own host (the one they would contact
anyway: $HF_ENDPOINT or huggingface.co), with a short timeout, tells the same in a second, so the
command can stop with one line that says what to pass instead. With HF_HUB_OFFLINE set the hub is
not contacted at all and the libraries read their cache, as documented.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

TRUE = ("1", "true", "yes", "on")


def offline() -> bool:
    """The user switched the hub off (HF_HUB_OFFLINE, or the older TRANSFORMERS/HF_DATASETS_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in TRUE
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the hub's host opens within `timeout` seconds."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True   # the libraries go through the proxy; a direct probe would say nothing
    host, port = endpoint()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:   # no route, no DNS, refused, timed out
        return False
