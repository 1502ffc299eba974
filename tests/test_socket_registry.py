"""SocketRegistry's opening turns: one socket opens at a time, and a turn always comes back."""

import threading

from app.web.sockets import SocketRegistry


def test_a_second_opening_waits_for_the_first_to_end_and_ending_twice_frees_one_turn():
    registry = SocketRegistry(capacity=4)
    registry.begin_opening()
    second_began, second_may_end = threading.Event(), threading.Event()

    def second():
        registry.begin_opening()
        second_began.set()
        second_may_end.wait(5)
        registry.end_opening()

    thread = threading.Thread(target=second, daemon=True)
    thread.start()
    assert not second_began.wait(0.2)  # still the first one's turn
    registry.end_opening()
    registry.end_opening()  # again, as a request's teardown does: no extra turn
    assert second_began.wait(5)
    second_may_end.set()
    thread.join(5)
    registry.begin_opening()  # the second gave its turn back
    registry.end_opening()
