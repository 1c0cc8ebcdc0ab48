"""Domain errors: expected failures that the API reports as `userErrors` (or top-level codes)."""

from __future__ import annotations


class DomainError(Exception):
    """An expected failure. `code` is the API's error code; `field` the input path, if any."""

    code = "BAD_USER_INPUT"

    def __init__(self, message: str, *, field: tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadInput(DomainError):
    code = "BAD_USER_INPUT"


class NotFound(DomainError):
    """Also what a viewer gets for an object it may not see."""

    code = "NOT_FOUND"


class InvalidTransition(DomainError):
    code = "INVALID_TRANSITION"


class Conflict(DomainError):
    code = "CONFLICT"


class Forbidden(DomainError):
    code = "FORBIDDEN"


class OperationForbidden(Exception):
    """The viewer's role may not call this operation at all (a top-level FORBIDDEN)."""
