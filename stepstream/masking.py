"""Mask the values of secret-looking fields in JSON that people read (``mask``).

A field is secret when its name, lowercased and without ``_``, ``-`` and spaces, contains
one of the configured names (``Settings.secret_fields``), which are normalized the same
way: ``api_key`` matches ``apiKey``, ``X-Api-Key`` and ``stripe_api_key``. Its value,
whatever it is (a string, a number, a whole object), becomes ``"***"``; the key stays,
so people see that a field was there.

Matching on substrings errs on the side of hiding: ``token`` also hides ``max_tokens``.
Set ``STEPSTREAM_SECRET_FIELDS`` to a list of your own to change that.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from stepstream.redact import REDACTED

DEFAULT_SECRET_FIELDS = ("password", "passwd", "passphrase", "secret", "token",
                         "authorization", "apikey", "privatekey", "credential", "cookie")
"""Names hidden unless ``STEPSTREAM_SECRET_FIELDS`` says otherwise: passwords, secrets,
tokens (access, refresh, bearer, session), HTTP ``Authorization`` and ``Cookie``
headers, API keys, private keys and credentials."""

_SEPARATORS = str.maketrans("", "", "_- ")


def _normal(name: str) -> str:
    return name.casefold().translate(_SEPARATORS)


class SecretFields:
    """The names of fields whose values are masked; none: nothing is masked."""

    def __init__(self, names: Iterable[str] = DEFAULT_SECRET_FIELDS) -> None:
        self.names = tuple(sorted({n for n in map(_normal, names) if n}))

    @classmethod
    def parse(cls, text: str) -> SecretFields:
        """From a comma-separated list (``STEPSTREAM_SECRET_FIELDS``); empty: none."""
        return cls(text.split(","))

    def __bool__(self) -> bool:
        return bool(self.names)

    def __repr__(self) -> str:
        return f"SecretFields({list(self.names)!r})"

    def secret(self, key: object) -> bool:
        """Whether a field named ``key`` is secret."""
        name = _normal(str(key))
        return any(n in name for n in self.names)

    def mask(self, value: Any) -> Any:
        """A copy of the JSON ``value`` with the values of secret fields masked, at any
        depth; ``value`` itself is left as it was."""
        return self._masked(value)[0]

    def mask_json(self, text: str | None) -> str | None:
        """``text`` (JSON) with the values of secret fields masked; the same string when
        nothing is (most texts are not even parsed). JSON that cannot be read back (too
        deep for the parser) is masked whole: it may hold anything."""
        if text is None or not self.names or not self._may_hold(text):
            return text
        try:
            masked, changed = self._masked(json.loads(text))
            return json.dumps(masked, ensure_ascii=False,
                              separators=(",", ":")) if changed else text
        except (ValueError, RecursionError):
            return json.dumps(REDACTED)

    def _may_hold(self, text: str) -> bool:
        """Whether a secret field's name may be in ``text`` (a superset: JSON escapes
        such as ``\\u0070assword`` are parsed to be sure)."""
        if "\\u" in text:
            return True
        normal = _normal(text)
        return any(n in normal for n in self.names)

    def _masked(self, value: Any) -> tuple[Any, bool]:
        """The masked copy and whether anything was masked. Iterative, so nesting of
        any depth takes no Python stack."""
        if not self.names:
            return value, False
        changed = False
        top: list[Any] = [None]
        todo: list[tuple[Any, Any, Any]] = [(top, 0, value)]  # (copy's parent, key, value)
        while todo:
            parent, key, item = todo.pop()
            if isinstance(item, dict):
                copy: dict[Any, Any] = {}
                for k, v in item.items():
                    if self.secret(k):
                        copy[k], changed = REDACTED, True
                    else:
                        copy[k] = None  # filled in from ``todo``; keeps the key order
                        todo.append((copy, k, v))
                parent[key] = copy
            elif isinstance(item, list | tuple):
                items: list[Any] = [None] * len(item)
                todo.extend((items, i, v) for i, v in enumerate(item))
                parent[key] = items
            else:
                parent[key] = item
        return top[0], changed


DEFAULT = SecretFields()


def mask(value: Any, fields: SecretFields = DEFAULT) -> Any:
    """``value`` (JSON: dicts, lists, scalars) with the values of ``fields`` masked."""
    return fields.mask(value)
