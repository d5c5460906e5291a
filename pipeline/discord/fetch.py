"""Downloading attachments from Discord's CDN without letting a link point us anywhere else.

A URL is fetched only if it is https on an allow-listed host (``discord_cdn_hosts``, port 443), or
exactly matches an allow-listed origin (an entry such as ``http://127.0.0.1:9000``, for local testing).
Redirects are followed by hand, at most ``MAX_REDIRECTS``, each hop checked again. The body is streamed
with a byte cap and an overall deadline, and its first bytes are sniffed: the file must really be audio,
an image or a video (``pipeline.media.sniff``: its real header checked in full, whatever its name or
Content-Type says). Every refusal raises
``InvalidInput`` (or ``RetryableError`` for network trouble) with a sentence meant for the Discord user.
URLs are never logged: attachment links carry signed query strings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx
import structlog

from pipeline.discord.api import quiet_http_logging
from pipeline.errors import InvalidInput, RetryableError
from pipeline.keys import slug
from pipeline.media.sniff import AUDIO_HINT, HEAD_BYTES, IMAGE_HINT, Kind, sniff, text_encoding

log = structlog.get_logger("mouthpiece.discord.fetch")

MAX_REDIRECTS = 3
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class AllowList:
    """Where downloads may come from: https hosts (port 443), and exact ``scheme://host:port`` origins."""

    hosts: frozenset[str]
    origins: frozenset[tuple[str, str, int]]

    @classmethod
    def parse(cls, entries: list[str]) -> AllowList:
        hosts, origins = set(), set()
        for entry in (e.strip() for e in entries):
            if "://" in entry:
                url = httpx.URL(entry)
                origins.add((url.scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(url.scheme, 0)))
            elif entry:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), frozenset(origins))

    def allows(self, url: httpx.URL) -> bool:
        if url.userinfo:
            return False
        host = url.host.lower().rstrip(".")
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 0)
        if (url.scheme, host, port) in self.origins:
            return True
        return url.scheme == "https" and port == 443 and host in self.hosts

    def describe(self) -> str:
        names = sorted(self.hosts) + sorted(f"{s}://{h}:{p}" for s, h, p in self.origins)
        return ", ".join(names) or "nowhere"


@dataclass(frozen=True)
class Downloaded:
    """A file on disk whose content was checked; ``path`` ends with the extension of its real format."""

    path: Path
    kind: Kind
    size: int


# --- sniffing ------------------------------------------------------------------------------------------


def refusal_for(what: str, accept: frozenset[Kind], head: bytes) -> str:
    """The sentence telling a user why the file at hand was refused."""
    looks = _looks_like_text(head)
    if Kind.audio in accept:
        return f"That file is not audio{looks}: {AUDIO_HINT}"
    return f"The {what} is not an image or a video{looks}: {IMAGE_HINT}"


def _looks_like_text(head: bytes) -> str:
    start = head.lstrip()[:15].lower()
    if start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return " (it is a web page or markup)"
    if not head:
        return " (it is empty)"
    return " (it is text)" if text_encoding(head) else ""


# --- downloading ------------------------------------------------------------------------------------------


@dataclass
class Fetcher:
    """Downloads attachments under the rules above. One per process; thread-safe (httpx.Client is)."""

    allow: AllowList
    max_bytes: int
    timeout: float = 30.0
    deadline: float = 120.0
    transport: httpx.BaseTransport | None = None

    def __post_init__(self) -> None:
        quiet_http_logging()
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout), follow_redirects=False, transport=self.transport
        )

    def close(self) -> None:
        self._client.close()

    def download(
        self, url: str, dest_dir: Path, *, what: str, accept: frozenset[Kind], name: str
    ) -> Downloaded:
        """Fetch ``url`` into ``dest_dir`` as ``<slug(name)><real extension>``; refuse with a reason."""
        current = self._checked(url, what)
        ends = time.monotonic() + self.deadline
        for _ in range(MAX_REDIRECTS + 1):
            try:
                result = self._get(current, dest_dir, what, accept, name, ends)
            except httpx.TransportError as exc:
                raise RetryableError(f"could not download the {what} ({type(exc).__name__})") from None
            if isinstance(result, Downloaded):
                log.info("attachment_downloaded", what=what, kind=result.kind.value, bytes=result.size)
                return result
            current = self._checked(result, what, redirected=True)
        raise InvalidInput(f"the {what} link redirects too many times")

    def _checked(self, url: str | httpx.URL, what: str, *, redirected: bool = False) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise InvalidInput(f"the {what} link is not a valid URL") from None
        if not self.allow.allows(parsed):
            if redirected:
                raise InvalidInput(f"the {what} link redirected somewhere that is not allowed")
            raise InvalidInput(
                f"the {what} link is not a Discord attachment (only https links on {self.allow.describe()} are used)"
            )
        return parsed

    def _get(
        self, url: httpx.URL, dest_dir: Path, what: str, accept: frozenset[Kind], name: str, ends: float
    ) -> Downloaded | httpx.URL:
        """One hop: the file, or the URL it redirects to (not yet checked)."""
        with self._client.stream("GET", url) as response:
            if response.is_redirect and "location" in response.headers:
                return url.join(response.headers["location"])
            if response.status_code != 200:
                raise InvalidInput(
                    f"the {what} could not be downloaded (HTTP {response.status_code}); was it deleted?"
                )
            self._check_declared_size(response, what)
            return self._save(response, dest_dir, what, accept, name, ends)

    def _check_declared_size(self, response: httpx.Response, what: str) -> None:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise InvalidInput(self._too_large(what, int(declared)))

    def _too_large(self, what: str, size: int) -> str:
        return f"the {what} is {_mb(size)} MB; the limit is {_mb(self.max_bytes)} MB"

    def _save(
        self,
        response: httpx.Response,
        dest_dir: Path,
        what: str,
        accept: frozenset[Kind],
        name: str,
        ends: float,
    ) -> Downloaded:
        dest_dir.mkdir(parents=True, exist_ok=True)
        part = dest_dir / f".{slug(name, 40)}.part"
        try:
            size, head = self._stream(response, part, what, ends)
            sniffed = sniff(head)
            if sniffed is None or sniffed.kind not in accept:
                raise InvalidInput(refusal_for(what, accept, head))
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        target = dest_dir / f"{slug(PurePosixPath(name).stem, 60)}{sniffed.ext}"
        part.replace(target)
        return Downloaded(target, sniffed.kind, size)

    def _stream(self, response: httpx.Response, part: Path, what: str, ends: float) -> tuple[int, bytes]:
        """Write the body to ``part`` under the byte cap and deadline; (size, first ``HEAD_BYTES``)."""
        size, head = 0, b""
        with part.open("wb") as out:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise InvalidInput(f"the {what} is over the {_mb(self.max_bytes)} MB limit")
                if time.monotonic() > ends:
                    raise RetryableError(f"downloading the {what} took too long")
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                out.write(chunk)
        return size, head


def _mb(size: int) -> str:
    mb = size / 1024 / 1024
    return f"{mb:.1f}" if mb < 10 else f"{mb:.0f}"
