"""Relay identifiers: UUIDs and the compound document ids the Relay Server uses.

A compound id is ``<relay_uuid>-<doc_uuid>`` or ``<relay_uuid>-<middle_uuid>-<doc_uuid>``:
the relay is always the first UUID and the document the last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["InvalidId", "CompoundId", "is_uuid", "parse_uuid", "parse_compound_id", "compound_id"]

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID_RE = re.compile(rf"^{_UUID}$")
_COMPOUND_RE = re.compile(rf"^({_UUID})-(?:({_UUID})-)?({_UUID})$")


class InvalidId(ValueError):
    """A string that should be a UUID or compound id is not one."""


@dataclass(frozen=True, slots=True)
class CompoundId:
    relay_id: str
    doc_id: str
    middle_id: str | None = None

    def __str__(self) -> str:
        return compound_id(self.relay_id, self.doc_id, self.middle_id)


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and bool(_UUID_RE.match(value))


def parse_uuid(value: object, *, what: str = "id") -> str:
    """Return ``value`` as a canonical lower-case UUID.

    Raises:
        InvalidId: ``value`` is not a UUID; the message names ``what``.
    """
    if not is_uuid(value):
        shown = value if not isinstance(value, str) or len(value) <= 80 else value[:80] + "..."
        if not isinstance(value, str | int | float | bool | None):
            shown = type(value).__name__
        raise InvalidId(f"{what} must be a UUID like 6ba7b810-9dad-11d1-80b4-00c04fd430c8 (got {shown!r})")
    return value.lower()  # type: ignore[union-attr]


def parse_compound_id(value: object) -> CompoundId:
    """Split a compound document id into relay, optional middle, and document UUIDs.

    Raises:
        InvalidId: ``value`` is not ``<relay>-<doc>`` or ``<relay>-<middle>-<doc>``.
    """
    match = _COMPOUND_RE.match(value) if isinstance(value, str) else None
    if not match:
        shown = value if isinstance(value, str) and len(value) <= 120 else type(value).__name__
        raise InvalidId(f"doc_id must be '<relay uuid>-<document uuid>' (got {shown!r})")
    relay, middle, doc = match.groups()
    return CompoundId(relay.lower(), doc.lower(), middle.lower() if middle else None)


def compound_id(relay_id: str, doc_id: str, middle_id: str | None = None) -> str:
    if middle_id:
        return f"{relay_id}-{middle_id}-{doc_id}"
    return f"{relay_id}-{doc_id}"
