"""Ed25519 verification of interaction requests (Discord signs ``X-Signature-Timestamp + raw body``)."""

from __future__ import annotations

import math
import time

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from pipeline.errors import SignatureError

MAX_SKEW_SECONDS = 300.0
"""A request whose timestamp is further than this from our clock is refused (replay protection)."""


def verify(
    public_key_hex: str,
    signature_hex: str | None,
    timestamp: str | None,
    body: bytes,
    *,
    now: float | None = None,
    max_skew: float = MAX_SKEW_SECONDS,
) -> None:
    """Return if ``signature_hex`` signs ``timestamp + body`` with the key, and the timestamp is fresh.

    Raises ``SignatureError`` otherwise (missing headers, malformed hex, wrong key, tampered body,
    stale or future timestamp).
    """
    if not signature_hex or not timestamp:
        raise SignatureError("missing signature headers")
    _check_fresh(timestamp, time.time() if now is None else now, max_skew)
    try:
        key = VerifyKey(bytes.fromhex(public_key_hex))
        key.verify(timestamp.encode() + body, bytes.fromhex(signature_hex))
    except (ValueError, TypeError) as exc:
        raise SignatureError("malformed key or signature") from exc
    except BadSignatureError as exc:
        raise SignatureError("signature does not match") from exc


def _check_fresh(timestamp: str, now: float, max_skew: float) -> None:
    try:
        sent = float(timestamp)
    except ValueError as exc:
        raise SignatureError("timestamp is not a number") from exc
    if not math.isfinite(sent) or abs(now - sent) > max_skew:
        raise SignatureError(f"timestamp is {now - sent:.0f} s off")
