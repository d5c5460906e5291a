"""docker-compose.yml as the deployment test runs it: services resolved from the file itself.

Reads the compose file (YAML anchors and merge keys resolved by the YAML loader), interpolates
``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}`` and ``$$`` from a dotenv file as
docker compose does, and maps service host names to loopback ports, so a test starts each service as a
local process with exactly the environment and command compose would give its container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` whose variable is unset or empty: compose refuses to start."""


def read_dotenv(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and empty:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and empty:
            return arg
        return value or ""

    return _VAR.sub(one, text)


@dataclass
class Service:
    name: str
    command: list[str]
    environment: dict[str, str]
    raw: dict[str, Any]


class Compose:
    def __init__(self, path: Path, env: dict[str, str], hosts: dict[str, str] | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = yaml.safe_load(path.read_text())
        self.env = env
        self.hosts = hosts or {}

    def service(self, name: str) -> Service:
        raw = self.data["services"][name]
        environment = raw.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        resolved = {k: self._map(interpolate(str(v), self.env)) for k, v in environment.items()}
        command = [self._map(interpolate(str(c), self.env)) for c in raw.get("command", [])]
        return Service(name, command, resolved, raw)

    def _map(self, value: str) -> str:
        for host_port, loopback in self.hosts.items():
            value = re.sub(rf"(?<![\w.-]){re.escape(host_port)}(?![\w.-])", loopback, value)
        return value
