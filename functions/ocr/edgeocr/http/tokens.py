"""Short-lived signed tokens for the local upload PUT: the stand-in for a presigned S3 URL.

A token binds the SHA-256, the length and the content type the client declared to an expiry
time, so that the local PUT checks exactly what S3 would have signed.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from ..errors import InputError


class BadToken(InputError):
    code = "invalid_upload_token"


class UploadSigner:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def sign(self, sha256: str, length: int, content_type: str, expires: int) -> str:
        return f"{expires}.{length}.{self._mac(sha256, length, content_type, expires)}"

    def check(self, token: str, sha256: str, content_type: str) -> int:
        """The declared length, if the token is genuine, unexpired and for these bytes."""
        try:
            expires_s, length_s, mac = token.split(".")
            expires, length = int(expires_s), int(length_s)
        except ValueError:
            raise BadToken("the upload token is malformed") from None
        # compare_digest takes ASCII text only: anything else cannot be our MAC anyway
        if not mac.isascii() or not hmac.compare_digest(
                mac, self._mac(sha256, length, content_type, expires)):
            raise BadToken("the upload token does not match this file and content type")
        if time.time() > expires:
            raise BadToken("the upload token has expired; ask POST /uploads again")
        return length

    def _mac(self, sha256: str, length: int, content_type: str, expires: int) -> str:
        msg = f"{sha256}\n{length}\n{content_type}\n{expires}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()
