"""Keep secrets out of what stepstream prints: logs, reprs, error messages."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (the user name stays, to debug ACLs).

    ``redis://app:s3cret@redis:6379/0`` becomes ``redis://app:***@redis:6379/0``; a URL
    without credentials is returned as it is.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED  # unparsable: it may hold anything
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))
