"""What users of PostgreSQL's notifications need from a listener, and `NoListener`,
the one a service alone on its SQLite file uses.

`PgListener` (store/listener_postgres.py) is the real one; it lives apart because it imports
psycopg (about 10 MB), which a service on SQLite never loads.
"""

from __future__ import annotations

from collections.abc import Callable


class Listener:
    """What users of notifications need; `NoListener` is the one for SQLite."""

    connected = False

    def on(self, channel: str, handler: Callable[[str], None]) -> None:
        """Call `handler(payload)` for each notification on `channel`."""

    def on_reconnect(self, handler: Callable[[], None]) -> None:
        """Call `handler()` after each (re)connection: what was sent meanwhile is lost."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class NoListener(Listener):
    """A process alone on its database hears everything from itself."""
