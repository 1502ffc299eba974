"""Typed reading of environment variables for app/config.py: each reader returns a value
of one kind or raises ConfigError naming the variable and what it should look like."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from limits import parse_many

from .generation.notify.signing import is_secret


class ConfigError(ValueError):
    """A setting in the environment is missing or malformed."""


class EnvironmentReader:
    """Typed access to environment variables, with errors that name the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str, default: str) -> str:
        value = self._environ.get(name, "").strip()
        return value or default

    def optional(self, name: str) -> str | None:
        return self._environ.get(name, "").strip() or None

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
        return value

    def optional_integer(self, name: str, low: int, high: int) -> int | None:
        if not self._environ.get(name, "").strip():
            return None
        return self.integer(name, low, low, high)

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default)
        for option in allowed:
            if option.lower() == value.lower():
                return option
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

    def flag(self, name: str, default: bool) -> bool:
        value = self._environ.get(name, "").strip().lower()
        if not value:
            return default
        if value not in ("true", "1", "yes", "false", "0", "no"):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value in ("true", "1", "yes")

    def webhook_secret(self, name: str) -> str:
        value = self._environ.get(name, "").strip()
        if value and not is_secret(value):
            raise ConfigError(
                f"{name} must be a whsec_ secret (whsec_ and at least 16 bytes in base64); "
                "`flask --app wsgi webhooks new-secret` prints one"
            )
        return value

    def delays(self, name: str) -> tuple[float, ...]:
        """Comma-separated seconds, each from 0 to a week ("5,300,1800")."""
        raw = self._environ.get(name, "").strip()
        if not raw:
            return ()
        try:
            delays = tuple(float(part) for part in raw.split(","))
        except ValueError:
            delays = ()
        if not delays or any(not 0 <= delay <= 7 * 86_400 for delay in delays):
            raise ConfigError(f'{name} must be comma-separated seconds like "5,300,1800"')
        return delays

    def rate_limit(self, name: str, default: str) -> str:
        """A limit in the `limits` notation: "10/second;300/minute"."""
        value = self.text(name, default)
        try:
            limits = parse_many(value)
        except ValueError:
            limits = []
        if not limits or any(limit.amount < 1 for limit in limits):
            raise ConfigError(f'{name} must look like "10/second;300/minute", got {value!r}')
        return value


def http_base_url(url: str, name: str) -> str:
    """An http(s) base URL without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")
