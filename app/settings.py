"""The one Settings class: every ORDERPULSE_* variable, read once, validated at start."""

from __future__ import annotations

import ipaddress
import re
from datetime import time
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_business_days(value: str) -> frozenset[int]:
    """Parse `mon-fri` or `mon,wed,fri` (or a mix) into weekday numbers (Monday = 0)."""
    days: set[int] = set()
    for part in value.lower().replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part:
            start, end = part.split("-", 1)
            if start not in WEEKDAYS or end not in WEEKDAYS:
                raise ValueError(f"unknown weekday in {part!r}")
            first, last = WEEKDAYS.index(start), WEEKDAYS.index(end)
            span = (
                range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]
            )
            days.update(span)
        elif part in WEEKDAYS:
            days.add(WEEKDAYS.index(part))
        else:
            raise ValueError(f"unknown weekday {part!r}")
    if not days:
        raise ValueError("at least one business day is required")
    return frozenset(days)


_HOURS = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


def parse_business_hours(value: str) -> tuple[time, time | None]:
    """Parse `09:00-17:00`; an end of `24:00` is returned as None (end of day)."""
    match = _HOURS.match(value.strip())
    if not match:
        raise ValueError("expected HH:MM-HH:MM, e.g. 09:00-17:00")
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em != 0):
        raise ValueError("hours out of range")
    start = time(sh, sm)
    end = None if eh == 24 else time(eh, em)
    if end is not None and end <= start:
        raise ValueError("the end of business hours must be after the start")
    return start, end


class Settings(BaseSettings):
    """Configuration from ORDERPULSE_* environment variables (and a `.env` file)."""

    model_config = SettingsConfigDict(
        env_prefix="ORDERPULSE_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = "sqlite:///./orderpulse.db"
    redis_url: str | None = None
    smtp_url: str | None = None
    mail_from: str = "orderpulse@localhost"
    support_email: str = "support@localhost"
    mail_dir: str = "./outbox-mail"
    failure_sla_hours: float = Field(default=2.0, gt=0)
    timezone: str = "UTC"
    business_days: str = "mon-fri"
    business_hours: str = "09:00-17:00"
    holidays: str | None = None
    approval_threshold: Decimal = Field(default=Decimal("5000"), ge=0)
    blocked_email_domains: Annotated[frozenset[str], NoDecode] = frozenset()
    delivery_retry_seconds: float = Field(default=30.0, gt=0)
    delivery_max_attempts: int = Field(default=8, ge=1)
    # renewed every third of it while a mail is sent: a dead worker's mail waits at most this long
    delivery_lease_seconds: float = Field(default=15.0, gt=0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)  # rows of other processes, retries
    fanout_poll_seconds: float = Field(default=1.0, gt=0)  # a lost cross-process wake-up
    allowed_origins: Annotated[frozenset[str], NoDecode] = frozenset()
    ws_init_timeout_seconds: float = Field(default=5.0, gt=0)
    ws_max_subscriptions: int = Field(default=50, ge=1)
    # a socket's messages waiting to be sent: per subscription (SLOW_CONSUMER past it), and the
    # socket's own answers (pongs, results, errors; 4400 past it)
    ws_queue_size: int = Field(default=256, ge=1)
    # everything waiting on one socket, in bytes (1008 when events pass it, else 4400)
    ws_queue_bytes: int = Field(default=8 * 1024 * 1024, ge=4096)
    # sockets authenticating or starting a subscription at once (admission pacing in storms)
    ws_admission_concurrency: int = Field(default=32, ge=1)
    escalation_poll_seconds: float = Field(default=5.0, gt=0)
    # Incidents (SPEC 10): this many failures with one reason within the window open one.
    incident_threshold: int = Field(default=5, ge=2)
    incident_window_minutes: float = Field(default=10.0, gt=0)
    incident_digest_minutes: float = Field(default=30.0, gt=0)
    max_query_depth: int = Field(default=12, ge=2)
    max_query_tokens: int = Field(default=2000, ge=50)
    max_aliases: int = Field(default=30, ge=1)
    max_query_cost: int = Field(default=20000, ge=1)
    max_body_bytes: int = Field(default=1048576, ge=1024)  # HTTP bodies and websocket messages
    # a longer GraphQL document is refused before it is parsed, hashed or kept (QUERY_TOO_COMPLEX)
    max_document_bytes: int = Field(default=65536, ge=1024)
    trusted_documents_only: bool = False
    # automatic persisted queries one token may register (later ones run but are not stored)
    max_persisted_per_token: int = Field(default=1000, ge=0)
    max_sockets_per_token: int = Field(default=50, ge=1)
    token_check_seconds: float = Field(default=2.0, gt=0)  # revoked tokens' sockets close by then
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # Run known query documents from a precompiled plan (app/graphql/planner); false: always
    # the generic executor (the planner's differential tests and benchmarks compare both).
    read_planner: bool = True
    rate_limit: str = "1200/minute"
    """Operations per token (per client address without one), e.g. `1200/minute`, `20/second`."""
    # Proxies whose X-Forwarded-For names the client (uvicorn's `forwarded_allow_ips`: addresses,
    # networks or `*`); empty: no proxy is trusted and the client address is always the peer's.
    forwarded_allow_ips: Annotated[frozenset[str], NoDecode] = frozenset()
    # A connection that has not sent a whole request head (or body) this long after it began, or
    # has been idle this long, is closed.
    http_read_timeout_seconds: float = Field(default=10.0, gt=0)
    # Open connections one peer address may hold at once (0: no cap; behind a proxy every
    # client shares the proxy's address).
    max_connections_per_address: int = Field(default=0, ge=0)
    log_format: Literal["text", "json"] = "text"
    metrics_token: SecretStr | None = None
    """When set, /metrics answers only `Authorization: Bearer <this value>` (else 401)."""
    # PostgreSQL: the longest a connection attempt, a statement or a wait for a pooled connection
    # may take; past it the request gets 503 (a partition drops packets: only a limit notices)
    database_timeout_seconds: float = Field(default=10.0, gt=0)
    # Redis (the event transport, shared rate limits): the longest a connection attempt or a
    # command may take
    redis_timeout_seconds: float = Field(default=2.0, gt=0)

    @field_validator("blocked_email_domains", "allowed_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(p.strip().lower() for p in value.split(",") if p.strip())
        return value

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _proxies(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list | tuple | set | frozenset):
            return value
        proxies = frozenset(str(p).strip() for p in value if str(p).strip())
        for proxy in proxies - {"*"}:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"expected IP addresses or networks separated by commas, or *, not {proxy!r}"
                ) from None
        return proxies

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("business_days")
    @classmethod
    def _days(cls, value: str) -> str:
        parse_business_days(value)
        return value

    @field_validator("business_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        parse_business_hours(value)
        return value

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: str | None) -> str | None:
        if not value:
            return None
        import holidays as holidays_lib

        code = value.strip().upper()
        if code not in holidays_lib.list_supported_countries():
            raise ValueError(f"unknown holiday country code {value!r}")
        return code

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            limits = parse_many(value)
        except ValueError:
            raise ValueError(
                f"expected a count per period, e.g. 1200/minute or 20/second, not {value!r}"
            ) from None
        if len(limits) != 1 or limits[0].amount < 1:
            raise ValueError(f"expected one positive count per period, not {value!r}")
        return value.strip()

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _metrics_token(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None  # set but empty: no token
        if isinstance(value, str) and value != value.strip():
            raise ValueError("must not start or end with whitespace")
        return value

    @field_validator("support_email", "mail_from")
    @classmethod
    def _plain_address(cls, value: str) -> str:
        from app.notifications.addresses import RULE, AddressError, plain_address

        try:
            return plain_address(value, local=True)  # `support@localhost` is fine
        except AddressError as exc:
            raise ValueError(f"must be {RULE}, not {value!r} ({exc.reason})") from None

    @field_validator("database_url")
    @classmethod
    def _db(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "postgres")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp(cls, value: str | None) -> str | None:
        if value and not value.startswith(("smtp://", "smtps://")):
            raise ValueError("must be an smtp:// or smtps:// URL")
        return value or None

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql", "postgres"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
