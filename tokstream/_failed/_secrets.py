"""Keeping secrets out of saved records: what a client's secrets are, and scrubbing them.

:func:`client_secrets` lists what a client must never write (its API key, its
URL's userinfo and password, header values named like credentials);
:class:`Scrubber` replaces each by ``***`` in strings and in JSON bodies;
:func:`redact_url` hides a URL's userinfo whatever it is. Data only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec

__all__ = ["REDACTED", "Scrubber", "client_secrets", "redact_url", "url_secrets"]

REDACTED = "***"
"""What a secret becomes."""

_encode = msgspec.json.Encoder().encode


class Scrubber:
    """Replaces each secret by ``***`` in strings and JSON bodies.

    Args:
        secrets: The strings to keep out; empty ones are ignored. Longer ones
            are replaced first, so that ``user:password`` goes as a whole.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        # A secret inside a JSON string may appear escaped in the encoded body.
        self._forms = {form for s in self._secrets for form in (s.encode(), _encode(s)[1:-1])}

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        """Return ``text`` with every secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def optional(self, text: str | None) -> str | None:
        """:meth:`__call__` for an optional string."""
        return None if text is None else self(text)

    def body(self, body: bytes) -> bytes:
        """Return a JSON body with every secret replaced in its strings (and keys).

        A body that holds no secret is returned as is, byte for byte.
        """
        if not any(form in body for form in self._forms):
            return body
        return _encode(self._walk(msgspec.json.decode(body)))

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        if isinstance(value, dict):
            return {self(k): self._walk(v) for k, v in value.items()}
        return value


# A URL's userinfo (``//user:password@``), for URLs urlsplit refuses.
_USERINFO = re.compile(r"//[^/?#\s]*@")


def redact_url(url: str) -> str:
    """Return ``url`` with any userinfo (``user:password@``) replaced by ``***@``.

    Also for a URL that does not parse (a bad port, a broken IPv6 host): it is
    shown in the message that refuses it.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(f"//{REDACTED}@", url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))


def url_secrets(url: str) -> list[str]:
    """Return the secrets a URL carries: its userinfo and password (raw and decoded)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    if "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rpartition("@")[0]
    found = [userinfo]
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    return found


_SENSITIVE = ("auth", "key", "token", "secret", "password", "cookie")


def client_secrets(
    base_url: str, api_key: str | None, headers: Mapping[str, str] | None
) -> tuple[str, ...]:
    """Return what a client must never save: its API key, URL credentials, sensitive headers.

    A header is sensitive when its name mentions auth, key, token, secret,
    password or cookie.
    """
    found = [api_key] if api_key else []
    if "@" in base_url:
        found += url_secrets(base_url)
    if headers:
        for name, value in headers.items():
            if value and any(word in name.lower() for word in _SENSITIVE):
                found.append(value)
    return tuple(found)
