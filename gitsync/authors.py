"""Who wrote a change, from the documents' own authorship data, and who authors a commit.

Why: the webhook's ``user`` names whoever loaded a document into the server's memory,
not who typed. Every Relay document knows better: its root map ``users`` lists, per
relay user, the Yjs client ids of that user's connections, and every change a client
makes advances that client's clock in the document's state vector. So the writers of a
change are the clients whose clocks advanced since the state vector we kept, mapped to
relay users through ``users``; the clock difference counts their new operations
(inserted items and characters; a deletion counts when the editor records it in its
``users`` entry, which advances its clock too).

Rules (the README tells users the same):

- A document seen for the first time claims nobody: we cannot tell what of its history
  is new. A document that appears in a folder we already synced is new as a whole, so
  every client in its state vector wrote it.
- A client id missing from ``users`` (or claimed by two users) counts as
  :data:`UNKNOWN`: its operations are counted but credit nobody.
- The commit author is the person with the most new operations; the others become
  ``Co-authored-by:`` trailers and the message gets an ``Authors:`` line. With no known
  writer the service identity authors the commit.
- Split per author (``commit_per_author``): each file goes to the person who wrote most
  of its operations (ties: the identity that sorts first); that commit names the file's
  other writers as co-authors. Files nobody is known to have written go first, under the
  service identity.

Relay user ids come from the documents and are hostile: an identity made from one
(:meth:`AuthorBook.identity`) keeps only characters that cannot break a commit header.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .yframes import FrameError, encode_varuint, read_varuint

__all__ = [
    "DEFAULT_TEMPLATE",
    "UNKNOWN",
    "AuthorBook",
    "AuthorGroup",
    "Credit",
    "InvalidIdentity",
    "assign_changes",
    "check_template",
    "credit",
    "decode_state_vector",
    "encode_state_vector",
    "known",
    "merge_writers",
    "message_with_credit",
    "parse_identity",
    "split_by_author",
    "writers_since",
]

UNKNOWN = ""
"""Writer key of operations by clients that no relay user claims (never a user id: those
are non-empty)."""

DEFAULT_TEMPLATE = "{user} <{user}@users.relay.invalid>"
"""Identity of a relay user without an ``[authors]`` entry; ``{user}`` is the user id."""

MAX_ID_CHARS = 64  # of a user id inside a generated identity
MAX_IDENTITY_CHARS = 256  # of a name or an email in [authors]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_IDENTITY = re.compile(r"^(?P<name>[^<>]*?)\s*<(?P<email>[^<>]*)>$")
_EMAIL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

Writers = dict[str, int]
"""Relay user id (or :data:`UNKNOWN`) -> new operations."""


class InvalidIdentity(ValueError):
    """Not a usable ``Name <email>``; the message says what is wrong (lowercase)."""


# --------------------------------------------------------------------------- state vectors


def decode_state_vector(data: bytes) -> dict[int, int]:
    """Client id -> clock from an encoded Yjs v1 state vector (``Doc.get_state()``).

    Raises:
        ValueError: truncated, overlong or inconsistent bytes.
    """
    try:
        count, pos = read_varuint(data, 0)
        if count > (len(data) - pos) // 2:
            raise ValueError(f"state vector claims {count} clients in {len(data)} bytes")
        out: dict[int, int] = {}
        for _ in range(count):
            client, pos = read_varuint(data, pos)
            clock, pos = read_varuint(data, pos)
            out[client] = clock
    except FrameError as exc:
        raise ValueError(f"not a state vector: {exc}") from exc
    return out


def encode_state_vector(vector: Mapping[int, int]) -> bytes:
    """The v1 encoding of ``vector``, clients in ascending order (same vector, same bytes)."""
    out = bytearray(encode_varuint(len(vector)))
    for client in sorted(vector):
        out += encode_varuint(client) + encode_varuint(vector[client])
    return bytes(out)


def writers_since(before: bytes | None, state_vector: bytes, users: Mapping[int, str], *,
                  new: bool = False) -> Writers:
    """Who wrote a document since the state vector ``before`` was kept.

    Args:
        before: the encoded state vector kept at the last applied change, or None.
        state_vector: the document's encoded state vector now.
        users: client id -> relay user id, from the document's ``users`` map.
        new: the document is new to a folder we already synced: with no ``before``
            all of it is new (otherwise a first sight claims nobody).

    Returns:
        user id (or :data:`UNKNOWN`) -> operations; empty when nothing can be told.
        Undecodable vectors (a damaged state row) also give an empty result.
    """
    if before is None and not new:
        return {}
    try:
        old = decode_state_vector(before) if before is not None else {}
        now = decode_state_vector(state_vector)
    except ValueError:
        return {}
    out: Writers = {}
    for client, clock in now.items():
        delta = clock - old.get(client, 0)
        if delta > 0:
            user = users.get(client, UNKNOWN)
            out[user] = out.get(user, 0) + delta
    return out


def merge_writers(*parts: Mapping[str, int]) -> Writers:
    """The sum of several writer counts."""
    out: Writers = {}
    for part in parts:
        for user, ops in part.items():
            out[user] = out.get(user, 0) + int(ops)
    return out


def known(writers: Mapping[str, int]) -> Writers:
    """The writers that are relay users (without :data:`UNKNOWN`)."""
    return {user: ops for user, ops in writers.items() if user != UNKNOWN and ops > 0}


# --------------------------------------------------------------------------- identities


def parse_identity(text: str) -> str:
    """Check and normalize ``Name <email>`` (unicode welcome).

    Raises:
        InvalidIdentity: not of that form, an empty part, a control character, or a
            part over 256 characters.
    """
    if not isinstance(text, str):
        raise InvalidIdentity("must be a string like 'Name <email@example.org>'")
    if _CONTROL.search(text):
        raise InvalidIdentity("must not contain control characters or line breaks")
    match = _IDENTITY.match(text.strip())
    if match is None:
        raise InvalidIdentity(f"must look like 'Name <email@example.org>' (got {text!r})")
    name, email = match.group("name").strip(), match.group("email").strip()
    if not name:
        raise InvalidIdentity(f"needs a name before the <email> (got {text!r})")
    if not email or "@" not in email or any(ch.isspace() for ch in email):
        raise InvalidIdentity(f"needs an email like <someone@example.org> without spaces (got {text!r})")
    if len(name) > MAX_IDENTITY_CHARS or len(email) > MAX_IDENTITY_CHARS:
        raise InvalidIdentity(f"name and email must each be at most {MAX_IDENTITY_CHARS} characters")
    return f"{name} <{email}>"


def _name_safe(user: str) -> str:
    text = " ".join(_CONTROL.sub(" ", user).replace("<", " ").replace(">", " ").split())
    return text[:MAX_ID_CHARS].strip() or "unknown"


def _email_safe(user: str) -> str:
    text = _EMAIL_UNSAFE.sub("-", user).strip(".-")
    return text[:MAX_ID_CHARS].strip(".-") or "user"


def _fill(template: str, user: str) -> str:
    """``template`` with ``{user}`` made safe for where it stands (before or inside ``<>``)."""
    name_part, sep, email_part = template.partition("<")
    return name_part.replace("{user}", _name_safe(user)) + sep + email_part.replace("{user}", _email_safe(user))


def check_template(template: str) -> str:
    """Validate an identity template; returns it.

    Raises:
        InvalidIdentity: it does not give ``Name <email>`` for a user id.
    """
    if not isinstance(template, str):
        raise InvalidIdentity("must be a string like '{user} <{user}@users.relay.invalid>'")
    parse_identity(_fill(template, "user-id"))
    return template


@dataclass(frozen=True)
class AuthorBook:
    """Relay user id -> commit identity: ``[authors]`` entries, else the template.

    Attributes:
        names: user id -> ``Name <email>`` (already checked by :func:`parse_identity`).
        template: identity of users without an entry; ``{user}`` is their id, reduced to
            characters that are safe where it stands.
    """

    names: Mapping[str, str] = field(default_factory=dict)
    template: str = DEFAULT_TEMPLATE

    def identity(self, user: str) -> str:
        """``Name <email>`` of a relay user."""
        found = self.names.get(user)
        if found is not None:
            return found
        try:
            return parse_identity(_fill(self.template, user))
        except InvalidIdentity:  # a checked template always parses; keep a safe fallback
            return parse_identity(_fill(DEFAULT_TEMPLATE, user))


# --------------------------------------------------------------------------- commits


@dataclass(frozen=True)
class Credit:
    """Who a commit names.

    Attributes:
        author: the identity with the most operations, or None (the service identity).
        co_authors: the other identities, most operations first.
        operations: identity -> operations, for the ``Authors:`` line.
    """

    author: str | None = None
    co_authors: tuple[str, ...] = ()
    operations: Mapping[str, int] = field(default_factory=dict)

    @property
    def people(self) -> tuple[str, ...]:
        return ((self.author,) if self.author else ()) + self.co_authors


@dataclass(frozen=True)
class AuthorGroup:
    """The paths of one commit of a split interval, and its credit."""

    paths: tuple[str, ...]
    credit: Credit


def _by_identity(writers: Iterable[Mapping[str, int]], book: AuthorBook) -> dict[str, int]:
    totals: dict[str, int] = {}
    for part in writers:
        for user, ops in known(part).items():
            ident = book.identity(user)
            totals[ident] = totals.get(ident, 0) + ops
    return totals


def _ranked(totals: Mapping[str, int]) -> list[str]:
    return sorted(totals, key=lambda ident: (-totals[ident], ident))


def credit(paths: Iterable[str], writers: Mapping[str, Mapping[str, int]], book: AuthorBook) -> Credit:
    """One commit for ``paths``: the identity with most operations authors it.

    Two relay users mapped to one identity count as one person.
    """
    totals = _by_identity((writers.get(path, {}) for path in paths), book)
    ranked = _ranked(totals)
    if not ranked:
        return Credit()
    return Credit(ranked[0], tuple(ranked[1:]), {ident: totals[ident] for ident in ranked})


def split_by_author(paths: Sequence[str], writers: Mapping[str, Mapping[str, int]],
                    book: AuthorBook) -> list[AuthorGroup]:
    """One group per person (``commit_per_author``), in order of their first path.

    Each path goes to the identity that wrote most of its operations (ties: the one
    that sorts first); paths with no known writer form the first group, credited to
    nobody (the service identity). A group's co-authors are the other known writers
    of its paths.
    """
    owned: dict[str | None, list[str]] = {}
    for path in paths:
        ranked = _ranked(_by_identity([writers.get(path, {})], book))
        owned.setdefault(ranked[0] if ranked else None, []).append(path)
    order = ([None] if None in owned else []) + [owner for owner in owned if owner is not None]
    groups = []
    for owner in order:
        group_paths = tuple(owned[owner])
        if owner is None:
            groups.append(AuthorGroup(group_paths, Credit()))
            continue
        totals = _by_identity((writers.get(path, {}) for path in group_paths), book)
        others = [ident for ident in _ranked(totals) if ident != owner]
        groups.append(AuthorGroup(group_paths, Credit(owner, tuple(others),
                                                      {ident: totals[ident] for ident in [owner, *others]})))
    return groups


def assign_changes(changes: Sequence[Sequence[str]], groups: Sequence[AuthorGroup],
                   prefix: str = "") -> list[list[list[str]]]:
    """Split commit-message lines ``[verb, path, (dst)]`` between groups.

    A line goes to the first group holding one of its paths (``prefix`` joins a line's
    folder path to a repository path); lines no group holds go to the last group, whose
    commit completes the interval.

    Returns:
        One list of lines per group.
    """
    owner: dict[str, int] = {}
    for index, group in enumerate(groups):
        for path in group.paths:
            owner.setdefault(path, index)
    out: list[list[list[str]]] = [[] for _ in groups]
    for line in changes:
        repo_paths = [f"{prefix}/{p}" if prefix else p for p in line[1:3]]
        found = [owner[p] for p in repo_paths if p in owner]
        index = min(found) if found else len(groups) - 1
        if out:
            out[index].append(list(line))
    return out


def _display_name(identity: str) -> str:
    name, _, email = identity.partition("<")
    return name.strip() or email.rstrip(">").strip()


def message_with_credit(message: str, who: Credit) -> str:
    """``message`` plus, when more than one person wrote, an ``Authors:`` line, then one
    ``Co-authored-by:`` trailer per co-author (the last paragraph, where git reads them)."""
    if not who.co_authors:
        return message
    text = message.rstrip("\n") + "\n\n"
    text += "Authors: " + ", ".join(_display_name(ident) for ident in who.people) + "\n\n"
    text += "".join(f"Co-authored-by: {ident}\n" for ident in who.co_authors)
    return text
