"""The delivery thread: sends what the outbox holds, in every process.

One thread (`gen-webhooks`) claims due deliveries (store/deliveries.py) and hands each
to a small pool of sender threads, at most `concurrency` attempts in flight and at most
`per_host` to one host, so a slow or dead receiver can hold a few sender threads and
nothing else: not a worker, not a request thread, not another receiver's deliveries.
A delivery whose host is at its limit goes back to the outbox, due a moment later.

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
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from ..events.observers import JobObserver
from ..job import Job
from ..settings import WebhookSettings
from ..store.deliveries import Delivery, DeliveryStore
from .schedule import retry_at
from .sender import Answer, post
from .signing import signature_headers
from .targets import Resolver, UnsafeTarget, check_target, system_resolver

log = logging.getLogger(__name__)

# How long after a busy host's delivery is put back it is tried again.
BUSY_HOST_DELAY = timedelta(seconds=1)

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
        secrets_for: Callable[[str | None], list[str]],
        payload: Payload,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        resolve: Resolver = system_resolver,
    ) -> None:
        self.deliveries = deliveries
        self.settings = settings
        self.payload = payload
        self.listeners: list[AttemptListener] = []
        self._secrets_for = secrets_for
        self._clock = clock
        self.resolve = resolve
        # Longer than any attempt can take, so a live attempt's row is not claimed again.
        self._lease = timedelta(seconds=3 * (settings.connect_timeout + settings.read_timeout))
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()  # attempts running, by host
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._senders: ThreadPoolExecutor | None = None

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        self._senders = ThreadPoolExecutor(
            self.settings.concurrency, thread_name_prefix="gen-webhook-send"
        )
        self._thread = threading.Thread(target=self._loop, name="gen-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming; attempts in flight end on their own timeouts (their rows stay
        pending and are due again once their lease runs out, for this process's
        successor or another machine)."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._senders is not None:
            self._senders.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        self._wake.set()

    # -- hooks into a job's life (events/observers.py) ------------------------------

    @contextmanager
    def running(self, job: Job) -> Iterator[None]:
        if job.webhook is not None and job.webhook.wants("started"):
            self.wake()
        yield

    def landed(self, job: Job, file: dict[str, Any]) -> None:
        if job.webhook is not None and job.webhook.wants("output"):
            self.deliveries.add_output(job, file, self._clock())
            self.wake()

    def finished(self, job: Job, outcome: str, run_seconds: float) -> None:
        if job.webhook is not None:
            self.wake()

    # -- the loop -----------------------------------------------------------------

    def dispatch_due(self) -> int:
        """Claim what is due and free to send, and start an attempt of each; returns how
        many started."""
        with self._lock:
            free = self.settings.concurrency - sum(self._in_flight.values())
        if free <= 0:
            return 0
        now = self._clock()
        started = 0
        for delivery in self.deliveries.claim_due(now, free, self._lease):
            host = urlsplit(delivery.url).hostname or ""
            with self._lock:
                busy = self._in_flight[host] >= self.settings.per_host
                if not busy:
                    self._in_flight[host] += 1
            if busy:
                self.deliveries.put_back(delivery, now + BUSY_HOST_DELAY)
                continue
            assert self._senders is not None, "start() first"
            self._senders.submit(self._attempt_and_release, delivery, host)
            started += 1
        return started

    def attempt(self, delivery: Delivery) -> Answer:
        """Send one attempt of `delivery` and record its outcome."""
        answer = self._send(delivery)
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
        outcome = "delivered" if answer.delivered else ("retrying" if again else "failed")
        if recorded is None:
            log.info("webhook %s: attempt outlived its claim; not recorded", delivery.id)
        elif not answer.delivered:
            log.warning(
                "webhook %s (%s of job %s) to %s: attempt %d %s: %s",
                delivery.id,
                delivery.event,
                delivery.job_id,
                urlsplit(delivery.url).hostname,
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

    def _loop(self) -> None:
        while not self._stopped.is_set():
            wait = self.settings.poll_interval
            try:
                self.dispatch_due()
                wait = self._seconds_to_next_due(wait)
            except Exception:  # noqa: BLE001 - a database outage: try again later
                log.exception("webhook dispatch failed; retrying in %ss", wait)
            self._wake.wait(wait)
            self._wake.clear()

    def _seconds_to_next_due(self, longest: float) -> float:
        due = self.deliveries.next_due()
        if due is None:
            return longest
        return min(longest, max(0.05, (due - self._clock()).total_seconds()))

    def _attempt_and_release(self, delivery: Delivery, host: str) -> None:
        try:
            self.attempt(delivery)
        except Exception:  # noqa: BLE001 - its lease runs out and it is tried again
            log.exception("webhook %s: attempt failed unexpectedly", delivery.id)
        finally:
            with self._lock:
                self._in_flight[host] -= 1
            self.wake()  # a slot is free

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
        secrets = self._secrets_for(delivery.key_id)
        if not secrets:
            return Answer(None, "not sent: no signing secret is configured (WEBHOOK_SECRET)")
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

    def _retry_at(self, delivery: Delivery, now: datetime) -> datetime | None:
        return retry_at(delivery.attempts + 1, now, self.settings.retry_delays)
