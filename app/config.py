"""Every setting of the service, read once from the environment.

`Config.from_env()` is the only place that looks at `os.environ`. A `.env` file in the
working directory is loaded first (python-dotenv) so that gunicorn, which does not read
`.env` by itself, sees the same settings as `flask` commands. Values already set in the
environment win over `.env`.

Values are read through `EnvironmentReader` (environment.py). A bad value raises
`ConfigError` naming the variable, so a misconfigured deployment fails
at start instead of misbehaving later. docs/operations.md lists every variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from dotenv import load_dotenv

from .environment import ConfigError, EnvironmentReader, http_base_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REPLICATE_DEFAULT_BASE = "https://api.replicate.com/v1"
DEFAULT_INSTANCE_DIR = PROJECT_ROOT / "instance"
# Fly's kill_timeout is at most 300 s; the drain must end well before it.
MAX_DRAIN_TIMEOUT = 270
AUTH_MODES = ("open", "keys")
MIN_SECRET_KEY_LENGTH = 32


# Threads never given to WebSockets, so /health and the API answer however many are open.
MIN_HTTP_THREADS = 2


@dataclass(frozen=True)
class Config:
    generation_workers: int = 2
    generation_workers_max: int = 2
    generation_queue_size: int = 100
    priority_aging_seconds: int = 60
    generation_scale_up_seconds: int = 5
    generation_worker_idle_seconds: int = 60
    web_concurrency: int = 1
    web_threads: int = 1024
    port: int = 8000
    database_url: str = f"sqlite:///{DEFAULT_INSTANCE_DIR / 'generation.db'}"
    results_dir: Path = DEFAULT_INSTANCE_DIR / "results"
    max_content_length: int = 64 * 1024
    job_max_attempts: int = 3
    job_timeout_seconds: int = 600
    # A running job's lease; its process's heartbeat renews it every third of that.
    job_lease_seconds: int = 30
    # Where result ZIPs live: "filesystem" (RESULTS_DIR) or "database" (every machine
    # can read them; the default on PostgreSQL).
    results_store: str = "filesystem"
    log_level: str = "INFO"
    # Seconds running jobs get to finish after SIGTERM before they are put back in the
    # queue; gunicorn's graceful_timeout and Fly's kill_timeout are derived from it.
    drain_timeout_seconds: int = 20
    # Results older than this are deleted (0 keeps them forever).
    result_ttl_hours: int = 24
    # How long a signed link to a result, file or preview works (app/web/links.py).
    result_url_ttl_seconds: int = 3600
    sentry_dsn: str | None = None
    sentry_environment: str | None = None
    sentry_release: str | None = None
    sentry_traces_sample_rate: float = 0.1
    generation_cpu_isolation: str = "process"
    generation_process_idle_seconds: int = 300
    # repr=False: the token must never reach a log line through a printed Config.
    replicate_api_token: str = field(default="", repr=False)
    replicate_api_base: str = REPLICATE_DEFAULT_BASE
    replicate_timeout_seconds: int = 30
    auth_mode: str = "open"
    secret_key: str = field(default="", repr=False)
    max_queued_per_key: int = 20
    rate_limit: str = "10/second;300/minute"
    # Where clients reach this service (links in webhook bodies); on Fly, the app's
    # fly.dev address unless set. Empty: links are paths.
    public_url: str = ""
    # Webhooks (docs/webhooks.md): targets must be public https URLs unless these allow
    # more; open mode's signing secret (keys mode: each key's own) and the one it
    # replaced, which signs too during a rotation.
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    webhook_secret: str = field(default="", repr=False)
    webhook_previous_secret: str = field(default="", repr=False)
    webhook_concurrency: int = 8
    webhook_per_host: int = 2
    webhook_timeout_seconds: int = 10
    # Seconds between attempts (empty: the default schedule, about a day).
    webhook_retry_delays: tuple[float, ...] = ()

    @property
    def result_ttl(self) -> timedelta | None:
        return timedelta(hours=self.result_ttl_hours) if self.result_ttl_hours else None

    # None: half of WEB_THREADS (each open socket holds one thread; HTTP keeps the rest).
    ws_max_connections: int | None = None
    ws_ping_interval: int = 25
    # A socket sends a job's progress at most this often (the newest); outcomes at once.
    ws_update_interval_ms: int = 250
    # Which machine this is, as operators' drains name it: Fly's machine id (stable
    # across restarts of that machine), else the host name.
    machine: str | None = None
    # Exit after this many seconds with nothing to do anywhere (docs/operations.md,
    # "Idle stop"); 0: never (the default; fly.toml turns it on).
    idle_stop_seconds: int = 0

    @property
    def websocket_capacity(self) -> int:
        """How many WebSockets one process keeps open at once."""
        if self.ws_max_connections is not None:
            return self.ws_max_connections
        return max(1, self.web_threads // 2)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Config:
        """Build the configuration from `environ` (default: `os.environ` after `.env`)."""
        if environ is None:
            if dotenv:
                load_dotenv(Path.cwd() / ".env", override=False)
            environ = os.environ
        reader = EnvironmentReader(environ)
        database_url = normalize_database_url(
            reader.text("DATABASE_URL", cls.database_url), "DATABASE_URL"
        )
        # Several machines can all read a database; only one can read a local folder.
        results_default = "FILESYSTEM" if database_url.startswith("sqlite") else "DATABASE"
        workers = reader.integer("GENERATION_WORKERS", cls.generation_workers, 1, 64)
        config = cls(
            generation_workers=workers,
            generation_workers_max=reader.integer("GENERATION_WORKERS_MAX", workers, 1, 64),
            generation_queue_size=reader.integer(
                "GENERATION_QUEUE_SIZE", cls.generation_queue_size, 1, 1_000_000
            ),
            priority_aging_seconds=reader.integer(
                "PRIORITY_AGING_SECONDS", cls.priority_aging_seconds, 1, 86_400
            ),
            generation_scale_up_seconds=reader.integer(
                "GENERATION_SCALE_UP_SECONDS", cls.generation_scale_up_seconds, 1, 3_600
            ),
            generation_worker_idle_seconds=reader.integer(
                "GENERATION_WORKER_IDLE_SECONDS", cls.generation_worker_idle_seconds, 1, 86_400
            ),
            web_concurrency=reader.integer("WEB_CONCURRENCY", cls.web_concurrency, 1, 64),
            web_threads=reader.integer("WEB_THREADS", cls.web_threads, 1, 4096),
            port=reader.integer("PORT", cls.port, 1, 65535),
            database_url=database_url,
            results_dir=Path(reader.text("RESULTS_DIR", str(cls.results_dir))),
            max_content_length=reader.integer(
                "MAX_CONTENT_LENGTH", cls.max_content_length, 1024, 100 * 1024 * 1024
            ),
            job_max_attempts=reader.integer("JOB_MAX_ATTEMPTS", cls.job_max_attempts, 1, 100),
            job_timeout_seconds=reader.integer(
                "JOB_TIMEOUT_SECONDS", cls.job_timeout_seconds, 1, 7 * 24 * 3600
            ),
            job_lease_seconds=reader.integer("JOB_LEASE_SECONDS", cls.job_lease_seconds, 1, 3600),
            machine=reader.optional("FLY_MACHINE_ID"),
            idle_stop_seconds=reader.integer("IDLE_STOP_SECONDS", cls.idle_stop_seconds, 0, 86_400),
            results_store=reader.choice(
                "RESULTS_STORE", results_default, ("DATABASE", "FILESYSTEM")
            ).lower(),
            log_level=reader.choice(
                "LOG_LEVEL", cls.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")
            ),
            drain_timeout_seconds=reader.integer(
                "DRAIN_TIMEOUT_SECONDS", cls.drain_timeout_seconds, 0, MAX_DRAIN_TIMEOUT
            ),
            result_ttl_hours=reader.integer("RESULT_TTL_HOURS", cls.result_ttl_hours, 0, 87_600),
            result_url_ttl_seconds=reader.integer(
                "RESULT_URL_TTL_SECONDS", cls.result_url_ttl_seconds, 10, 7 * 86_400
            ),
            sentry_dsn=reader.optional("SENTRY_DSN"),
            sentry_environment=reader.optional("SENTRY_ENVIRONMENT"),
            # Fly sets FLY_IMAGE_REF to the deployed image, a good release name by default.
            sentry_release=reader.optional("SENTRY_RELEASE") or reader.optional("FLY_IMAGE_REF"),
            sentry_traces_sample_rate=reader.number(
                "SENTRY_TRACES_SAMPLE_RATE", cls.sentry_traces_sample_rate, 0.0, 1.0
            ),
            generation_cpu_isolation=reader.choice(
                "GENERATION_CPU_ISOLATION", cls.generation_cpu_isolation, ("PROCESS", "THREAD")
            ).lower(),
            generation_process_idle_seconds=reader.integer(
                "GENERATION_PROCESS_IDLE_SECONDS", cls.generation_process_idle_seconds, 0, 86_400
            ),
            replicate_api_token=reader.text("REPLICATE_API_TOKEN", ""),
            replicate_api_base=http_base_url(
                reader.text("REPLICATE_API_BASE", cls.replicate_api_base), "REPLICATE_API_BASE"
            ),
            replicate_timeout_seconds=reader.integer(
                "REPLICATE_TIMEOUT_SECONDS", cls.replicate_timeout_seconds, 1, 600
            ),
            auth_mode=reader.choice("AUTH_MODE", cls.auth_mode, AUTH_MODES),
            secret_key=reader.text("SECRET_KEY", cls.secret_key),
            max_queued_per_key=reader.integer(
                "MAX_QUEUED_PER_KEY", cls.max_queued_per_key, 1, 1_000_000
            ),
            rate_limit=reader.rate_limit("RATE_LIMIT", cls.rate_limit),
            ws_max_connections=reader.optional_integer("WS_MAX_CONNECTIONS", 1, 100_000),
            ws_ping_interval=reader.integer("WS_PING_INTERVAL", cls.ws_ping_interval, 1, 3600),
            ws_update_interval_ms=reader.integer(
                "WS_UPDATE_INTERVAL_MS", cls.ws_update_interval_ms, 0, 10_000
            ),
            public_url=_public_url(reader),
            webhook_allow_http=reader.flag("WEBHOOK_ALLOW_HTTP", False),
            webhook_allow_private=reader.flag("WEBHOOK_ALLOW_PRIVATE", False),
            webhook_secret=reader.webhook_secret("WEBHOOK_SECRET"),
            webhook_previous_secret=reader.webhook_secret("WEBHOOK_PREVIOUS_SECRET"),
            webhook_concurrency=reader.integer(
                "WEBHOOK_CONCURRENCY", cls.webhook_concurrency, 1, 256
            ),
            webhook_per_host=reader.integer("WEBHOOK_PER_HOST", cls.webhook_per_host, 1, 256),
            webhook_timeout_seconds=reader.integer(
                "WEBHOOK_TIMEOUT_SECONDS", cls.webhook_timeout_seconds, 1, 60
            ),
            webhook_retry_delays=reader.delays("WEBHOOK_RETRY_DELAYS"),
        )
        config.check()
        return config

    @property
    def requires_keys(self) -> bool:
        return self.auth_mode == "keys"

    def check(self) -> None:
        """Reject combinations that would silently misbehave."""
        if self.generation_workers_max < self.generation_workers:
            raise ConfigError(
                f"GENERATION_WORKERS_MAX ({self.generation_workers_max}) must be at least "
                f"GENERATION_WORKERS ({self.generation_workers})"
            )
        if self.requires_keys and len(self.secret_key) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(
                f"SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters when "
                "AUTH_MODE=keys: it signs the short-lived WebSocket tokens, and every process "
                "must share it. Generate one with: "
                'python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        if self.web_concurrency > 1 and self.is_sqlite:
            raise ConfigError(
                "WEB_CONCURRENCY must be 1 with SQLite: each process would keep its own queue "
                "index over the file, so jobs submitted to one process would wait for that "
                "process alone, and a restart of one would retry jobs another is still "
                "running. Use WEB_THREADS to serve more requests, or set DATABASE_URL to "
                "PostgreSQL to run several processes and machines as one service "
                "(docs/operations.md)."
            )
        if self.idle_stop_seconds and self.web_concurrency > 1:
            raise ConfigError(
                "IDLE_STOP_SECONDS needs WEB_CONCURRENCY=1: a process sees only its own "
                "WebSockets and requests, so one idle process would stop the machine under "
                "another one's open sockets. Run more machines instead (docs/operations.md)."
            )
        if self.web_threads - self.websocket_capacity < MIN_HTTP_THREADS:
            raise ConfigError(
                f"WS_MAX_CONNECTIONS ({self.websocket_capacity}) must leave at least "
                f"{MIN_HTTP_THREADS} of WEB_THREADS ({self.web_threads}) for HTTP requests: "
                "every open WebSocket holds a thread"
            )


def _public_url(reader: EnvironmentReader) -> str:
    url = reader.optional("PUBLIC_URL")
    if url:
        return http_base_url(url, "PUBLIC_URL")
    app = reader.optional("FLY_APP_NAME")
    return f"https://{app}.fly.dev" if app else ""


def normalize_database_url(url: str, name: str = "DATABASE_URL") -> str:
    """Return a SQLAlchemy URL, accepting the `postgres://` form that Fly.io sets."""
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url[len("postgres://") :]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if not (url.startswith("sqlite") or url.startswith("postgresql+psycopg://")):
        raise ConfigError(
            f"{name} must be a sqlite:/// or postgres:// URL, got {url.split(':', 1)[0]!r}"
        )
    return url
