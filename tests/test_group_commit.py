"""Group commit: concurrent submissions share a transaction, each gets its own outcome only
after that transaction, and one bad member never fails the others."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.exc import OperationalError

from app.generation.errors import QueueFullError
from app.generation.store.group_commit import GroupCommit


class Database:
    """Writes groups, slowly enough for others to queue up behind the one in flight."""

    def __init__(self, poison: str | None = None) -> None:
        self.groups: list[list[str]] = []
        self.committed: set[str] = set()
        self.poison = poison
        self._busy = threading.Lock()

    def write(self, items: list[str]) -> list[object]:
        assert self._busy.acquire(blocking=False), "two groups written at once"
        try:
            threading.Event().wait(0.01)
            if self.poison in items:
                raise OperationalError("INSERT", {}, Exception("bad row"))
            self.groups.append(items)
            outcomes: list[object] = []
            for item in items:
                if item.startswith("full"):
                    outcomes.append(QueueFullError(1))
                else:
                    self.committed.add(item)
                    outcomes.append(f"written {item}")
            return outcomes
        finally:
            self._busy.release()


def submit_all(group: GroupCommit, items: list[str]) -> list[object]:
    def one(item: str) -> object:
        try:
            return group.submit(item)
        except Exception as error:  # noqa: BLE001 - collected for the assertions
            return error

    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(one, items))


def test_concurrent_submissions_share_transactions_and_each_gets_its_own_outcome():
    database = Database()
    group = GroupCommit(database.write, max_group=64)
    items = [f"job{n}" for n in range(40)]
    assert submit_all(group, items) == [f"written {item}" for item in items]
    assert sorted(sum(database.groups, [])) == sorted(items)
    assert len(database.groups) < len(items) / 2  # they went together, not one by one


def test_a_lone_submission_is_written_at_once_and_a_group_never_exceeds_its_bound():
    database = Database()
    group = GroupCommit(database.write, max_group=4)
    assert group.submit("alone") == "written alone"
    submit_all(group, [f"job{n}" for n in range(30)])
    assert max(len(written) for written in database.groups) <= 4


def test_a_refused_member_fails_alone_inside_its_group():
    database = Database()
    group = GroupCommit(database.write, max_group=64)
    outcomes = submit_all(group, ["a", "full-1", "b"])
    assert outcomes[0] == "written a" and outcomes[2] == "written b"
    assert isinstance(outcomes[1], QueueFullError)


def test_a_group_whose_transaction_fails_is_retried_one_by_one():
    database = Database(poison="bad")
    group = GroupCommit(database.write, max_group=64)
    items = ["bad", *(f"job{n}" for n in range(20))]
    outcomes = submit_all(group, items)
    assert isinstance(outcomes[0], OperationalError)
    assert outcomes[1:] == [f"written {item}" for item in items[1:]]
    assert database.committed == set(items[1:])


def test_max_group_must_be_positive():
    with pytest.raises(ValueError, match="max_group"):
        GroupCommit(lambda items: [], max_group=0)
