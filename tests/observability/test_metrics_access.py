"""/metrics behind ORDERPULSE_METRICS_TOKEN, and scrapes that read the database at most once per
OUTBOX_READ_SECONDS (SPEC 8, "Hostile clients"), over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from app.observability.metrics import OUTBOX_READ_SECONDS
from app.services import Services
from tests.observability.helpers import parse, value
from tests.support.api import Factory
from tests.support.clock import FakeClock
from tests.support.server import LiveServer
from tests.support.smtp import free_port

METRICS_TOKEN = "scrape-secret-4f1c"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # A mail server that refuses connections: notifications stay PENDING in the outbox.
    return {
        "metrics_token": METRICS_TOKEN,
        "smtp_url": f"smtp://127.0.0.1:{free_port()}",
        "delivery_retry_seconds": 3600,
        "escalation_poll_seconds": 3600,
    }


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.origin, timeout=10) as client:
        yield client


@pytest.fixture
def outbox_reads(services: Services) -> Iterator[list[str]]:
    """The statements that read the outbox gauges, as the database engine runs them."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "count(notification.id)" in statement.lower():
            statements.append(statement)

    engine = services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    yield statements
    event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("Authorization", "Bearer wrong-token")],
        [("Authorization", f"Basic {METRICS_TOKEN}")],
        [("Authorization", f"Bearer {METRICS_TOKEN}x")],
        [("Authorization", "Bearer wrong-token"), ("Authorization", f"Bearer {METRICS_TOKEN}")],
        [
            ("Authorization", f"Bearer {METRICS_TOKEN}"),
            ("Authorization", f"Bearer {METRICS_TOKEN}"),
        ],
    ],
    ids=["none", "wrong", "not-bearer", "longer", "two-headers", "the-token-twice"],
)
async def test_metrics_refuse_a_scrape_without_the_token(
    http: httpx.AsyncClient, outbox_reads: list[str], headers: list[tuple[str, str]]
) -> None:
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.text == "Unauthorized\n"
    assert outbox_reads == []  # nothing was read for it


async def test_metrics_answer_a_scrape_with_the_token(
    http: httpx.AsyncClient, outbox_reads: list[str]
) -> None:
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    samples = parse(response.text)
    assert value(samples, "orderpulse_outbox_pending") == 0
    assert len(outbox_reads) == 1


async def test_scrapes_read_the_outbox_once_per_window(
    http: httpx.AsyncClient,
    outbox_reads: list[str],
    factory: Factory,
    clock: FakeClock,
) -> None:
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}

    async def pending() -> float:
        response = await http.get("/metrics", headers=headers)
        assert response.status_code == 200
        return value(parse(response.text), "orderpulse_outbox_pending")

    assert [await pending() for _ in range(20)] == [0] * 20
    assert len(outbox_reads) == 1
    reseller = await factory.reseller()
    await factory.notify(reseller, reseller_mail=True)
    await factory.order(await factory.customer(reseller), status="PF")  # support + reseller mail
    clock.advance(seconds=OUTBOX_READ_SECONDS - 0.001)
    assert await pending() == 0  # still the first read's answer
    assert len(outbox_reads) == 1
    clock.advance(seconds=0.001)
    assert [await pending() for _ in range(20)] == [2] * 20
    assert len(outbox_reads) == 2


def test_the_metrics_token_setting() -> None:
    from pydantic import ValidationError

    from app.settings import Settings

    assert Settings(_env_file=None).metrics_token is None  # type: ignore[call-arg]
    assert Settings(_env_file=None, metrics_token="").metrics_token is None  # type: ignore[call-arg]
    token = Settings(_env_file=None, metrics_token="abc").metrics_token  # type: ignore[call-arg]
    assert token is not None and token.get_secret_value() == "abc"
    assert "abc" not in repr(Settings(_env_file=None, metrics_token="abc"))  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="must not start or end with whitespace"):
        Settings(_env_file=None, metrics_token=" abc")  # type: ignore[call-arg]
