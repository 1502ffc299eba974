"""How a GenerationService runs: its workers, its queue, its retries, its admission
policy and how long results are kept. One value, built from the environment by
app/wiring.py or directly by tests and benchmarks, so the service's constructor names
its parts and not a score of knobs.

Below the steps that read it (intake, execution) and above the policies whose defaults
it names (tests/test_layout.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from .scheduling.policy import DEFAULT_AGING_SECONDS

CPU_ISOLATION_MODES = ("process", "thread")
# How long a generation child process may sit idle before it exits (0: never).
DEFAULT_IDLE_SECONDS = 300.0


# Seconds after each failed webhook attempt before the next (each drawn within ±20%):
# 8 attempts over about 27 hours, the schedule of Svix (Standard Webhooks' authors).
DEFAULT_RETRY_DELAYS = (5.0, 300.0, 1800.0, 7200.0, 18_000.0, 36_000.0, 36_000.0)


@dataclass(frozen=True)
class WebhookSettings:
    """How webhooks are checked and sent (notify/; WEBHOOK_* in docs/webhooks.md)."""

    # Targets: https only, public addresses only, unless these say otherwise.
    allow_http: bool = False
    allow_private: bool = False
    # Attempts in flight per process, and at most this many to one host.
    concurrency: int = 8
    per_host: int = 2
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    # How often a process looks for due deliveries it was not told about (left by a
    # process that died, or by another machine); its own jobs' events and its retries'
    # due times wake it at once. Each look is one indexed read.
    poll_interval: float = 5.0
    # Open mode's signing secrets (`whsec_`): the first signs; a second one, during a
    # rotation, signs too. Keys mode signs with each key's own secrets.
    open_secrets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.per_host < 1:
            raise ValueError("webhook concurrency and per_host must be at least 1")
        if any(delay < 0 for delay in self.retry_delays):
            raise ValueError("webhook retry delays must not be negative")

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays) + 1


@dataclass(frozen=True)
class ServiceSettings:
    # Worker threads: `workers` always, up to `workers_max` while a backlog lasts
    # (GENERATION_WORKERS, GENERATION_WORKERS_MAX; execution/workers.py).
    workers: int = 2
    workers_max: int | None = None
    scale_up_seconds: float = 5.0
    idle_worker_seconds: float = 60.0
    # "process" runs cpu_bound generators in one child process per worker thread, so
    # they cannot starve request threads of the GIL; an idle child exits after
    # `process_idle_seconds` (0: never).
    cpu_isolation: str = "thread"
    process_idle_seconds: float = DEFAULT_IDLE_SECONDS
    # The queue's bound, across the cluster on PostgreSQL (GENERATION_QUEUE_SIZE).
    queue_size: int = 100
    # Seconds a job of one priority level waits before it ranks with the next level.
    aging_seconds: float = DEFAULT_AGING_SECONDS
    # A job given back (a crash, a drain) runs again until it was claimed this often.
    max_attempts: int = 3
    job_timeout: float | None = None
    # Admission policy: how many queued jobs one API key may have (MAX_QUEUED_PER_KEY);
    # None: no quota. Open mode's one anonymous owner has none.
    max_queued_per_key: int | None = None
    # Results older than this are deleted by a sweep every `sweep_interval` seconds.
    result_ttl: timedelta | None = None
    sweep_interval: float = 60.0
    # Stop the process after this many seconds with nothing to do (ops/idle.py); 0: never.
    idle_stop_seconds: float = 0.0
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    def __post_init__(self) -> None:
        if self.cpu_isolation not in CPU_ISOLATION_MODES:
            raise ValueError(f"cpu_isolation must be one of {CPU_ISOLATION_MODES}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")

    @property
    def worker_range(self) -> tuple[int, int]:
        """The fewest and the most worker threads."""
        return self.workers, max(self.workers, self.workers_max or self.workers)
