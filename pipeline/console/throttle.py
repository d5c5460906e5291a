"""Limits on wrong sign-ins (the form's password, and wrong bearer tokens), per client and for everyone.

- A client may get ``console_login_attempts`` wrong in 15 minutes (a sliding window); then it is
  answered 429 with ``Retry-After`` (the seconds until its oldest failure leaves the window) before its
  request body is read. A client is its address (an IPv6 address by its /64: one machine usually holds
  the whole prefix), or, for a browser that signed in here before, that browser (its ``mp_device``
  cookie, signed with the console's secret).
- All clients without such a cookie together may get ``console_login_global`` wrong a minute; past that,
  they are all answered 429 until the minute has passed — a guesser spread over many addresses gets no
  more tries than one. Browsers that signed in before are held back only by their own count: the owner
  signs in from one of them during an attack (or with the console token as a bearer token, whose
  failures count per client only; or waits out the ``Retry-After``; a restart forgets every count).
- A right password clears the client's count. Counts live in this process: with several replicas,
  each allows its own share.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable

CLIENT_WINDOW = 15 * 60.0
GLOBAL_WINDOW = 60.0
MAX_CLIENTS = 100_000
"""Clients whose failures are remembered; the oldest are forgotten past this (memory stays bounded)."""


def client_key(address: str | None) -> str:
    """The throttle's name for a client address: IPv4 as it is, IPv6 by its /64."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Throttle:
    """Failure counts per client and for all unknown clients (see the module docstring)."""

    def __init__(self, per_client: int, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_client = per_client
        self.per_minute = per_minute
        self.clock = clock
        self._clients: dict[str, deque[float]] = {}
        self._global: deque[float] = deque()

    def retry_after(self, client: str, *, known_device: bool) -> int | None:
        """Seconds the client must wait before its next try, or None when it may try now."""
        now = self.clock()
        waits = []
        failures = self._trim(self._clients.get(client), now, CLIENT_WINDOW)
        if failures is not None and len(failures) >= self.per_client:
            waits.append(failures[0] + CLIENT_WINDOW - now)
        if not known_device:
            self._trim(self._global, now, GLOBAL_WINDOW)
            if len(self._global) >= self.per_minute:
                waits.append(self._global[0] + GLOBAL_WINDOW - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def begin(self, client: str, *, known_device: bool) -> int | None:
        """A sign-in is about to be checked: the seconds to wait (and nothing counted), or None after
        counting it as a failure until ``succeeded`` says otherwise. Counting before the password is
        read is what limits parallel tries: 60 at once are 60 counted, not 60 let through."""
        wait = self.retry_after(client, known_device=known_device)
        if wait is None:
            self.failed(client, known_device=known_device)
        return wait

    def failed(self, client: str, *, known_device: bool, counts_globally: bool = True) -> None:
        now = self.clock()
        failures = self._clients.pop(client, None) or deque()
        self._trim(failures, now, CLIENT_WINDOW)
        failures.append(now)
        self._clients[client] = failures  # re-inserted: the dict's order is oldest activity first
        while len(self._clients) > MAX_CLIENTS:
            self._clients.pop(next(iter(self._clients)))
        if counts_globally and not known_device:
            self._trim(self._global, now, GLOBAL_WINDOW)
            self._global.append(now)

    def succeeded(self, client: str, *, known_device: bool) -> None:
        """A right password: the client's count starts again, and its try leaves the global count."""
        self._clients.pop(client, None)
        if not known_device and self._global:
            self._global.pop()

    @staticmethod
    def _trim(failures: deque[float] | None, now: float, window: float) -> deque[float] | None:
        while failures and failures[0] <= now - window:
            failures.popleft()
        return failures
