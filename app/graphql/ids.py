"""Opaque global IDs (`base64("Type:pk")`) and pagination cursors."""

from __future__ import annotations

import base64
import binascii

import strawberry


def to_global_id(type_name: str, pk: int) -> strawberry.ID:
    return strawberry.ID(
        base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode().rstrip("=")
    )


MAX_PK = 2**31 - 1
"""The largest key of any table (PostgreSQL's `integer`, the type of every id column): an id or
cursor naming a larger one cannot name a row, and PostgreSQL would refuse to compare with it."""


def parse_global_id(value: str, expected: str | None = None) -> tuple[str, int] | None:
    """(type name, pk), or None when malformed, out of range (1 to `MAX_PK`, in ASCII digits) or
    (given `expected`) of another type."""
    if not isinstance(value, str) or len(value) > 100:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    type_name, sep, pk = raw.partition(":")
    if not sep or not (pk.isascii() and pk.isdigit()) or (expected and type_name != expected):
        return None
    number = int(pk) if len(pk) <= len(str(MAX_PK)) else 0
    if not 1 <= number <= MAX_PK:
        return None
    return type_name, number


def parse_pk(value: str | None, expected: str) -> int | None:
    """The pk of an ID of type `expected`, or None."""
    if value is None:
        return None
    parsed = parse_global_id(value, expected)
    return parsed[1] if parsed else None


def to_cursor(kind: str, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{pk}".encode()).decode().rstrip("=")


def parse_cursor(value: str, kind: str) -> int | None:
    parsed = parse_global_id(value, kind)
    return parsed[1] if parsed else None
