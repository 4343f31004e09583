"""Errors about the caller's input. They carry a stable machine code and a human message;
the HTTP layer maps each class to a status, the engine knows nothing about HTTP."""

from __future__ import annotations

import re


class InputError(ValueError):
    """The input cannot be OCR'd; ``code`` is stable and documented in the API."""

    code = "bad_input"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class UnreadableImage(InputError):
    code = "unreadable_image"


class UnsupportedFormat(InputError):
    code = "unsupported_format"


class TooLarge(InputError):
    code = "too_large"


class UnreadableDocument(InputError):
    """A PDF (or TIFF) that cannot be opened at all: broken, truncated, no pages."""

    code = "unreadable_document"


class EncryptedDocument(InputError):
    """A PDF that needs a password to open."""

    code = "encrypted_document"


class PageError(InputError):
    """One page of a readable document that cannot be rendered; the other pages still can."""

    code = "unreadable_page"


def reason(exc: BaseException) -> str:
    """A library's exception as a short reason for a message, without object addresses, so
    that the same bytes always give the same error, message included."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", str(exc)) or type(exc).__name__
