"""One exception type for everything a user can get wrong, so the CLI can print it and exit non-zero."""

from __future__ import annotations


class EdgepruneError(Exception):
    """A failure the user can act on: `message` says what went wrong, `hint` what to try."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
