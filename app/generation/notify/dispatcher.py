"""The delivery thread: sends what the outbox holds, in every process.

One thread (`gen-webhooks`) claims due deliveries (store/deliveries.py) and hands each
to a small pool of sender threads (`gen-webhook-send-*`): at most `concurrency` attempts
in flight, at most `per_host` to one host, each bounded by a deadline (notify/sender.py).
So a slow or dead receiver holds a few sender threads for a few seconds and nothing
else: not a worker, not a request thread, not another receiver's deliveries. A claim
passes over the hosts whose slots are taken; their deliveries wait in the outbox.

Each attempt checks the target again (its DNS answer may have changed since the job was
submitted), signs the body with every live secret of the job's key, POSTs it, and
records the answer: delivered, due again after the next delay of the schedule (with
jitter), or failed for good after the last (the dead-letter an owner may redrive).

The thread wakes when a job with a webhook starts, lands a file or ends in this process
(the rows are already committed: the triggers wrote them with the status), when the
next retry falls due, and every `poll_interval` seconds for what other processes left.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..events.observers import JobObserver
from ..job import Job
from ..settings import WebhookSettings
from ..store.deliveries import Delivery, DeliveryStore
from .payload import basic_job_data, envelope
from .schedule import retry_at
from .sender import Answer, attempt_deadline, post
from .signing import signature_headers
from .targets import (
    RESOLVE_TIMEOUT_SECONDS,
    Resolver,
    UnsafeTarget,
    check_target,
    system_resolver,
)

log = logging.getLogger(__name__)

# What a claim adds to the longest an attempt can take (its lookup and its deadline), for
# building the body and recording the outcome: past that, the row may be claimed again.
CLAIM_MARGIN_SECONDS = 10.0

# A delivery's body: given the delivery, the JSON-ready payload (notify/payload.py; the
# service's renders the job document as GET answers it).
Payload = Callable[[Delivery], dict[str, Any]]
# An attempt's outcome, for metrics and error tracking: the delivery, what came back,
# and `delivered`, `retrying` or `failed`.
AttemptListener = Callable[[Delivery, Answer, str], None]


class WebhookDispatcher(JobObserver):
    def __init__(
        self,
        deliveries: DeliveryStore,
        settings: WebhookSettings,
        *,
        key_secrets: Callable[[str], list[str]],
        job_of: Callable[[str], Job],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        resolve: Resolver = system_resolver,
    ) -> None:
        self.deliveries = deliveries
        self.settings = settings
        # The body: the core's own rendering of the job (the web tier sets the document
        # GET answers: app/web/webhooks.py).
        self.payload: Payload = self._basic_payload
        self._job_of = job_of
        self.resolve = resolve
        self.listeners: list[AttemptListener] = []
        self._key_secrets = key_secrets
        self._clock = clock
        # Longer than any attempt can take, so a live attempt's row is not claimed again.
        longest = attempt_deadline(settings.connect_timeout, settings.read_timeout)
        self._lease = timedelta(seconds=longest + RESOLVE_TIMEOUT_SECONDS + CLAIM_MARGIN_SECONDS)
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()  # claimed and not yet recorded, by host
        self._work: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._senders: list[threading.Thread] = []

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start the claiming thread; sender threads start with the first delivery, so
        a process whose jobs never ask for webhooks runs one idle thread for them."""
        self._loop_thread = threading.Thread(target=self._loop, name="gen-webhooks", daemon=True)
        self._loop_thread.start()

    def _ensure_senders(self) -> None:
        # Daemon threads: an attempt still running when the process exits is abandoned
        # (its row is claimed again once the claim runs out), never waited for.
        if self._senders:
            return
        self._senders = [
            threading.Thread(target=self._send_loop, name=f"gen-webhook-send-{n}", daemon=True)
            for n in range(1, self.settings.concurrency + 1)
        ]
        for thread in self._senders:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming and sending, waiting at most `timeout` seconds for the threads.
        Deliveries handed out but not started go back to the outbox, due now; an attempt
        in flight ends by its deadline or is abandoned (its row is claimed again once the
        claim runs out: this process's successor or another machine sends it)."""
        self._stopped.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._loop_thread is not None:
            self._loop_thread.join(timeout)  # the claiming loop: nothing more is handed out
        unstarted = self._take_unstarted()
        if unstarted:
            try:
                self.deliveries.put_back(unstarted, self._clock())
            except SQLAlchemyError as error:  # they wait out their claim instead
                log.warning("could not return %d webhook deliveries: %s", len(unstarted), error)
        for _ in self._senders:
            self._work.put(None)
        for thread in self._senders:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _take_unstarted(self) -> list[Delivery]:
        unstarted = []
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                return unstarted
            if item is not None:
                unstarted.append(item)
                with self._lock:
                    self._in_flight[item.host] -= 1

    def wake(self) -> None:
        self._wake.set()

    def redrive(self, delivery_id: str, owner: str | None = None) -> Delivery | None:
        """Send a failed delivery again, with a fresh schedule of attempts; None if there
        is no failed delivery with that id (of `owner`, unless None)."""
        delivery = self.deliveries.redrive(delivery_id, owner, self._clock())
        if delivery is not None:
            self.wake()
        return delivery

    # -- hooks into a job's life (events/observers.py) ------------------------------

    @contextmanager
    def running(self, job: Job) -> Iterator[None]:
        if job.webhook is not None and job.webhook.wants("started"):
            self.wake()
        yield

    def landed(self, job: Job, file: dict[str, Any], position: int) -> None:
        """A file stored while its job runs: its `output` delivery now. (If this write
        is lost, the job's success writes it: store/outbox_triggers.py.)"""
        if job.webhook is not None and job.webhook.wants("output"):
            self.deliveries.add_output(job, file, position, self._clock())
            self.wake()

    def finished(self, job: Job, outcome: str, run_seconds: float) -> None:
        if job.webhook is not None:
            self.wake()

    # -- claiming -------------------------------------------------------------------

    def dispatch_due(self) -> int:
        """Claim what is due to hosts with a free slot, and hand each to a sender;
        returns how many were handed out."""
        free, busy = self._slots()
        if free <= 0 or self._stopped.is_set():
            return 0
        now = self._clock()
        over = []  # a claim may bring more of one host than it has slots for
        handed = 0
        for delivery in self.deliveries.claim_due(now, free, self._lease, busy):
            with self._lock:
                taken = self._in_flight[delivery.host] < self.settings.per_host
                if taken:
                    self._in_flight[delivery.host] += 1
            if taken:
                self._ensure_senders()
                self._work.put(delivery)
                handed += 1
            else:
                over.append(delivery)
        if over:
            self.deliveries.put_back(over, now)
        return handed

    def _slots(self) -> tuple[int, set[str]]:
        """How many attempts may start now, and the hosts that may take none."""
        with self._lock:
            free = self.settings.concurrency - sum(self._in_flight.values())
            busy = {h for h, n in self._in_flight.items() if n >= self.settings.per_host}
        return free, busy

    def _loop(self) -> None:
        while not self._stopped.is_set():
            wait = self.settings.poll_interval
            try:
                self.dispatch_due()
                wait = self._seconds_to_wait(wait)
            except Exception:  # noqa: BLE001 - a database outage: try again later
                log.exception("webhook dispatch failed; retrying in %ss", wait)
            self._wake.wait(wait)
            self._wake.clear()

    def _seconds_to_wait(self, longest: float) -> float:
        """Until the next delivery a free slot could take is due (at most `longest`).
        With every slot taken, a finished attempt wakes the loop."""
        free, busy = self._slots()
        due = self.deliveries.next_due(busy) if free > 0 else None
        if due is None:
            return longest
        return min(longest, max(0.05, (due - self._clock()).total_seconds()))

    # -- sending --------------------------------------------------------------------

    def _send_loop(self) -> None:
        while (delivery := self._work.get()) is not None:
            try:
                self.attempt(delivery)
            except Exception:  # noqa: BLE001 - its claim runs out and it is tried again
                log.exception("webhook %s: recording an attempt failed", delivery.id)
            finally:
                with self._lock:
                    self._in_flight[delivery.host] -= 1
                    if self._in_flight[delivery.host] <= 0:
                        del self._in_flight[delivery.host]
                self.wake()  # a slot is free

    def attempt(self, delivery: Delivery) -> Answer:
        """Send one attempt of `delivery` and record its outcome."""
        try:
            answer = self._send(delivery)
        except Exception as error:  # noqa: BLE001 - counted as a failed attempt, not looped on
            log.exception("webhook %s: could not be sent", delivery.id)
            answer = Answer(None, f"not sent: internal error ({type(error).__name__})")
        now = self._clock()
        again = None if answer.delivered else self._retry_at(delivery, now)
        recorded = self.deliveries.record(
            delivery,
            now,
            delivered=answer.delivered,
            status=answer.status,
            error=answer.error,
            retry_at=again,
        )
        if recorded is None:
            log.info("webhook %s: attempt outlived its claim; not recorded", delivery.id)
            return answer
        outcome = "delivered" if answer.delivered else ("retrying" if again else "failed")
        if not answer.delivered:
            log.warning(
                "webhook %s (%s of job %s) to %s: attempt %d %s: %s",
                delivery.id,
                delivery.event,
                delivery.job_id,
                delivery.host,
                delivery.attempts + 1,
                outcome,
                answer.error,
            )
        for listener in self.listeners:
            try:
                listener(delivery, answer, outcome)
            except Exception:  # noqa: BLE001 - watching must not change what happens
                log.exception("webhook attempt listener failed")
        return answer

    def _send(self, delivery: Delivery) -> Answer:
        settings = self.settings
        try:
            target = check_target(
                delivery.url,
                allow_http=settings.allow_http,
                allow_private=settings.allow_private,
                resolve=self.resolve,
            )
        except UnsafeTarget as refused:
            return Answer(None, f"not sent: {refused}")
        secrets = self._signing_secrets(delivery.key_id)
        if not secrets:
            return Answer(None, "not sent: no signing secret for it (WEBHOOK_SECRET, or its key's)")
        body = json.dumps(self.payload(delivery), separators=(",", ":")).encode()
        # The wall clock, whatever `clock` says: receivers check it against theirs.
        headers = signature_headers(delivery.id, datetime.now(UTC), body, secrets)
        return post(
            target,
            body,
            headers,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )

    def _signing_secrets(self, key_id: str | None) -> list[str]:
        """The secrets that sign a delivery: its key's (never another's), or open mode's."""
        if key_id is not None:
            return self._key_secrets(key_id)
        return list(self.settings.open_secrets)

    def _basic_payload(self, delivery: Delivery) -> dict[str, Any]:
        return envelope(delivery, basic_job_data(self._job_of(delivery.job_id)), self._clock())

    def _retry_at(self, delivery: Delivery, now: datetime) -> datetime | None:
        return retry_at(delivery.attempts + 1, now, self.settings.retry_delays)
