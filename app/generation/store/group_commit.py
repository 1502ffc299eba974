"""Group commit: concurrent submissions share one database transaction.

A PostgreSQL commit costs a WAL flush and a round trip, and every admission must hold
the cluster's admission lock while it counts and inserts (queue/postgres.py). So, as
PostgreSQL itself groups concurrent commits into one flush, submissions that arrive
while a transaction is being written wait for it to end and then go together in the
next: the first of them leads (runs the group's transaction on its own thread), the
others sleep until their outcome is known. Nobody waits for a timer: a lone submission
goes at once, and a group forms exactly when the database is the bottleneck.

Each caller still gets its own outcome, and only after the group's commit: the 202 of a
submission leaves once its row is durable. If the group's transaction fails, each member
is tried again alone, so one bad row (or a constraint only it breaks) fails only itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class _Waiter(Generic[Item]):
    __slots__ = ("item", "outcome", "done")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.outcome: object = None
        self.done = False


class GroupCommit(Generic[Item, Outcome]):
    """Lock invariant: `_lock` guards `_waiting` and `_leading`; at most one leader runs
    a group at a time, and every waiter is either in `_waiting`, in the group being
    written, or done."""

    def __init__(
        self,
        write_group: Callable[[list[Item]], list[Outcome | BaseException]],
        max_group: int,
    ) -> None:
        """`write_group` writes the items in one transaction and returns one outcome per
        item, in order (an exception instance for an item refused alone); it raises
        when the transaction failed."""
        if max_group < 1:
            raise ValueError(f"max_group must be at least 1, got {max_group}")
        self._write_group = write_group
        self._max_group = max_group
        self._waiting: list[_Waiter[Item]] = []
        self._leading = False
        self._changed = threading.Condition()
        self.groups = 0  # transactions written (for tests and benchmarks)

    def submit(self, item: Item) -> Outcome:
        """Write `item` with whatever else is waiting; its outcome, or raise its error."""
        waiter = _Waiter(item)
        with self._changed:
            self._waiting.append(waiter)
            while self._leading and not waiter.done:
                self._changed.wait()
            if not waiter.done:
                self._leading = True
                group, self._waiting = (
                    self._waiting[: self._max_group],
                    self._waiting[self._max_group :],
                )
        if not waiter.done:
            try:
                self._lead(group)
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()
        if isinstance(waiter.outcome, BaseException):
            raise waiter.outcome
        return waiter.outcome  # type: ignore[return-value]

    def _lead(self, group: list[_Waiter[Item]]) -> None:
        """Write the group; on a failed transaction, each member alone."""
        try:
            outcomes = self._written([waiter.item for waiter in group])
        except Exception as error:  # noqa: BLE001 - handed to its member, raised there
            if len(group) == 1:
                outcomes = [error]
            else:
                outcomes = [self._alone(waiter.item) for waiter in group]
        except BaseException as error:  # noqa: BLE001 - handed to every member, re-raised there
            outcomes = [error] * len(group)
        for waiter, outcome in zip(group, outcomes, strict=True):
            waiter.outcome = outcome
            waiter.done = True

    def _alone(self, item: Item) -> Outcome | BaseException:
        try:
            return self._written([item])[0]
        except Exception as error:  # noqa: BLE001 - this member's own error
            return error

    def _written(self, items: list[Item]) -> list[Outcome | BaseException]:
        self.groups += 1
        outcomes = self._write_group(items)
        if len(outcomes) != len(items):
            raise RuntimeError(f"{len(items)} items written, {len(outcomes)} outcomes")
        return outcomes
