"""Ed25519 verification of interaction requests."""

from __future__ import annotations

import time

import pytest
from nacl.signing import SigningKey

from pipeline.discord.signature import SignatureError, verify

BODY = b'{"type":1,"id":"1","application_id":"2"}'


def _sign(key: SigningKey, body: bytes, stamp: str) -> str:
    return key.sign(stamp.encode() + body).signature.hex()


def test_valid_signature_passes() -> None:
    """A signature by the application's key over timestamp + body, with a fresh timestamp, is accepted."""
    key = SigningKey.generate()
    stamp = str(int(time.time()))
    verify(key.verify_key.encode().hex(), _sign(key, BODY, stamp), stamp, BODY)


def test_forged_signature_is_refused() -> None:
    """A signature made with another key does not verify."""
    key, other = SigningKey.generate(), SigningKey.generate()
    stamp = str(int(time.time()))
    with pytest.raises(SignatureError, match="does not match"):
        verify(key.verify_key.encode().hex(), _sign(other, BODY, stamp), stamp, BODY)


def test_tampered_body_or_timestamp_is_refused() -> None:
    """Changing one byte of the body, or the timestamp the signature covers, breaks verification."""
    key = SigningKey.generate()
    public = key.verify_key.encode().hex()
    stamp = str(int(time.time()))
    signature = _sign(key, BODY, stamp)
    with pytest.raises(SignatureError):
        verify(public, signature, stamp, BODY.replace(b'"1"', b'"9"'))
    with pytest.raises(SignatureError):
        verify(public, signature, str(int(stamp) - 1), BODY)


@pytest.mark.parametrize("offset", [-301, 301, -3600])
def test_stale_or_future_timestamp_is_refused(offset: int) -> None:
    """A correctly signed request whose timestamp is more than 5 minutes off our clock is refused."""
    key = SigningKey.generate()
    now = time.time()
    stamp = str(int(now + offset))
    with pytest.raises(SignatureError, match="off"):
        verify(key.verify_key.encode().hex(), _sign(key, BODY, stamp), stamp, BODY, now=now)


def test_timestamp_within_skew_passes() -> None:
    """Four minutes of clock difference is tolerated."""
    key = SigningKey.generate()
    now = time.time()
    stamp = str(int(now - 240))
    verify(key.verify_key.encode().hex(), _sign(key, BODY, stamp), stamp, BODY, now=now)


@pytest.mark.parametrize(
    ("signature", "stamp"),
    [(None, "1"), ("ab", None), ("", ""), ("zz-not-hex", "now"), ("00" * 64, "nan"), ("00" * 3, "STAMP")],
)
def test_missing_or_malformed_headers_are_refused(signature: str | None, stamp: str | None) -> None:
    """Missing headers, non-hex signatures, short signatures and non-numeric timestamps all raise."""
    key = SigningKey.generate()
    real_stamp = str(int(time.time()))
    stamp = real_stamp if stamp in ("now", "STAMP") else stamp
    with pytest.raises(SignatureError):
        verify(key.verify_key.encode().hex(), signature, stamp, BODY)


def test_malformed_public_key_is_refused() -> None:
    """A misconfigured public key refuses every request rather than crashing."""
    key = SigningKey.generate()
    stamp = str(int(time.time()))
    with pytest.raises(SignatureError, match="malformed"):
        verify("not-a-key", _sign(key, BODY, stamp), stamp, BODY)
