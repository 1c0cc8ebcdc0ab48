"""The soak's verdict (scripts/soak.py): what a run recorded, and the checks that judge it.

Pure functions over plain data, so `tests/test_soak_checks.py` can plant a lost event, a duplicate,
a reordering, a missing mail, a bare 500 or a 1006 into a recording and see each check fail.

- streams: each subscriber's events per topic must be exactly the slice of the event log it may
  see, from the first event it received to the end of the run: in order, no gap, no duplicate,
  nothing it may not see;
- mail: every notification is SENT and reached the SMTP sink; a Message-ID received twice only
  where a worker was killed while sending it (`died_mid_send`); a copy under a Message-ID of no
  notification fails (a resend must reuse its notification's); every failure (an order
  entering PF) has the notifications the settings call for;
- HTTP: no 5xx outside fault windows; inside them only 503 with Retry-After (a connection reset
  only where a worker was killed);
- websockets: a close the client did not ask for carries 1012 or 1013 inside a fault window (1006
  only where a worker was killed: nothing is left to send a close frame), none outside;
- memory: each worker's RSS after its warm-up (counted from its own first sample: a worker
  restarted after a kill warms up again) grows by at most `flat_bytes_per_hour` (a least-squares
  slope over its samples), judged only over at least `min_judged_seconds`.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

FLAT_BYTES_PER_HOUR = 20 * 1024 * 1024
"""A worker's memory is flat when it grows less than this after the warm-up (20 MB/hour: the
issue's leak was about 60 MB/hour)."""
MIN_JUDGED_SECONDS = 600.0
"""A slope over less than this much time after the warm-up is reported, not judged (a short run
sees the allocator and caches settle, not a trend)."""


@dataclass(frozen=True)
class Window:
    """A fault, from its start to the end of its recovery allowance."""

    name: str
    start: float
    end: float
    kills_a_worker: bool = False

    def covers(self, start: float, end: float | None = None) -> bool:
        return start <= self.end and (end if end is not None else start) >= self.start


@dataclass(frozen=True)
class HttpRecord:
    kind: str  # "read" or "write"
    start: float
    end: float
    status: int  # 0: no response (the connection failed)
    retry_after: bool = False


@dataclass(frozen=True)
class WsClose:
    """A socket the server (or the network) closed, not the client."""

    at: float
    code: int


@dataclass
class Recording:
    windows: list[Window] = field(default_factory=list)
    http: list[HttpRecord] = field(default_factory=list)
    closes: list[WsClose] = field(default_factory=list)
    streams: dict[str, list[int]] = field(default_factory=dict)
    """"subscriber/topic" → event ids received, in order."""
    visible: dict[str, list[int]] = field(default_factory=dict)
    """"subscriber/topic" → the ids of the log it may see, from its first received id, ascending."""
    notifications: dict[str, str] = field(default_factory=dict)
    """Message-ID → status, for every notification in the database."""
    expected_notifications: int = 0
    """How many notifications the failures and the settings call for."""
    mails: dict[str, int] = field(default_factory=dict)
    """Message-ID → how many times the SMTP sink accepted it."""
    died_mid_send: set[str] = field(default_factory=set)
    """Message-IDs being sent when a worker was killed."""
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    """worker → (seconds since start, RSS bytes)."""
    warmup_seconds: float = 60.0


def check_streams(recording: Recording) -> list[str]:
    problems = []
    for key, received in sorted(recording.streams.items()):
        if not received:
            continue
        visible = recording.visible.get(key, [])
        seen = Counter(received)
        duplicates = sorted(i for i, n in seen.items() if n > 1)
        if duplicates:
            problems.append(f"{key}: duplicate events {duplicates[:10]}")
        reordered = [(a, b) for a, b in itertools.pairwise(received) if b < a]
        if reordered:
            problems.append(f"{key}: out of order {reordered[:5]}")
        lost = sorted(set(visible) - set(received))
        if lost:
            problems.append(f"{key}: lost events {lost[:10]} ({len(lost)} in all)")
        foreign = sorted(set(received) - set(visible))
        if foreign:
            problems.append(f"{key}: events it may not see (or not in the log) {foreign[:10]}")
    return problems


def check_mail(recording: Recording) -> list[str]:
    problems = []
    if len(recording.notifications) != recording.expected_notifications:
        problems.append(
            f"{recording.expected_notifications} notifications called for,"
            f" {len(recording.notifications)} exist"
        )
    not_sent = sorted(m for m, status in recording.notifications.items() if status != "SENT")
    if not_sent:
        problems.append(f"{len(not_sent)} notifications not SENT: {not_sent[:5]}")
    missing = sorted(m for m in recording.notifications if recording.mails.get(m, 0) == 0)
    if missing:
        problems.append(f"{len(missing)} notifications never reached the sink: {missing[:5]}")
    doubled = sorted(
        m for m, n in recording.mails.items() if n > 1 and m not in recording.died_mid_send
    )
    if doubled:
        problems.append(f"{len(doubled)} mails delivered twice without a crash: {doubled[:5]}")
    unknown = sorted(set(recording.mails) - set(recording.notifications))
    if unknown:
        problems.append(
            f"{len(unknown)} mails of no notification (a resend under another Message-ID?):"
            f" {unknown[:5]}"
        )
    return problems


def _window_of(windows: Iterable[Window], start: float, end: float | None = None) -> list[Window]:
    return [w for w in windows if w.covers(start, end)]


def check_http(recording: Recording) -> list[str]:
    outside: Counter[int] = Counter()
    inside_bad: Counter[str] = Counter()
    for record in recording.http:
        if record.status and record.status < 500:
            continue
        windows = _window_of(recording.windows, record.start, record.end)
        if not windows:
            outside[record.status] += 1
        elif record.status == 0:
            if not any(w.kills_a_worker for w in windows):
                inside_bad["no response"] += 1
        elif record.status != 503 or not record.retry_after:
            inside_bad[
                f"{record.status}{'' if record.retry_after else ' without Retry-After'}"
            ] += 1
    problems = []
    if outside:
        named = {("no response" if s == 0 else str(s)): n for s, n in outside.items()}
        problems.append(f"HTTP failures outside fault windows: {named}")
    if inside_bad:
        problems.append(f"HTTP failures inside fault windows other than 503: {dict(inside_bad)}")
    return problems


def check_closes(recording: Recording) -> list[str]:
    outside: Counter[int] = Counter()
    inside_bad: Counter[int] = Counter()
    for close in recording.closes:
        windows = _window_of(recording.windows, close.at)
        if not windows:
            outside[close.code] += 1
        elif close.code in (1012, 1013):
            continue
        elif close.code == 1006 and any(w.kills_a_worker for w in windows):
            continue
        else:
            inside_bad[close.code] += 1
    problems = []
    if outside:
        problems.append(f"websocket closes outside fault windows: {dict(outside)}")
    if inside_bad:
        problems.append(
            f"websocket closes inside fault windows without 1012/1013: {dict(inside_bad)}"
        )
    return problems


def slope_bytes_per_hour(samples: list[tuple[float, int]]) -> float | None:
    """The least-squares slope of (seconds, bytes), per hour; None for fewer than 3 samples."""
    if len(samples) < 3:
        return None
    xs = [t for t, _ in samples]
    ys = [float(b) for _, b in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread * 3600


def memory_trends(
    recording: Recording,
    *,
    flat_bytes_per_hour: float = FLAT_BYTES_PER_HOUR,
    min_judged_seconds: float = MIN_JUDGED_SECONDS,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per worker: its slope after the warm-up, and whether it was judged; and the problems."""
    trends: dict[str, dict[str, Any]] = {}
    problems = []
    for worker, samples in sorted(recording.rss.items()):
        # the warm-up of each worker from its own first sample: one restarted after a kill
        # warms up again (its caches, its pool)
        born = samples[0][0] if samples else 0.0
        after = [(t, b) for t, b in samples if t >= born + recording.warmup_seconds]
        slope = slope_bytes_per_hour(after)
        span = after[-1][0] - after[0][0] if len(after) > 1 else 0.0
        judged = slope is not None and span >= min_judged_seconds
        trends[worker] = {
            "first_bytes": samples[0][1] if samples else None,
            "last_bytes": samples[-1][1] if samples else None,
            "judged_seconds": round(span, 1),
            "slope_bytes_per_hour": None if slope is None else round(slope),
            "judged": judged,
        }
        if judged and slope is not None and slope > flat_bytes_per_hour:
            problems.append(
                f"{worker}: memory grows {slope / 2**20:.1f} MB/hour after the warm-up"
                f" (flat: under {flat_bytes_per_hour / 2**20:.0f} MB/hour)"
            )
    return trends, problems


def verdict(recording: Recording, **memory: float) -> dict[str, list[str]]:
    """Every check's problems, by check (all empty: the run passed)."""
    _trends, memory_problems = memory_trends(recording, **memory)
    return {
        "streams": check_streams(recording),
        "mail": check_mail(recording),
        "http": check_http(recording),
        "websockets": check_closes(recording),
        "memory": memory_problems,
    }


def per_minute_latency(http: Iterable[HttpRecord]) -> list[dict[str, Any]]:
    """p50/p99 (ms) of successful reads and writes, per minute of the run."""
    minutes: dict[tuple[int, str], list[float]] = {}
    for record in http:
        if record.status == 200:
            key = (int(record.start // 60), record.kind)
            minutes.setdefault(key, []).append(record.end - record.start)
    rows = []
    for minute in sorted({m for m, _ in minutes}):
        row: dict[str, Any] = {"minute": minute}
        for kind in ("read", "write"):
            values = sorted(minutes.get((minute, kind), []))
            row[kind] = {
                "count": len(values),
                "p50_ms": round(_nearest_rank(values, 50) * 1000, 1) if values else None,
                "p99_ms": round(_nearest_rank(values, 99) * 1000, 1) if values else None,
            }
        rows.append(row)
    return rows


def _nearest_rank(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def as_json(recording: Recording) -> dict[str, Any]:
    """The recording's summary for the report (not every record)."""
    return {
        "windows": [asdict(w) for w in recording.windows],
        "http_requests": len(recording.http),
        "websocket_closes": Counter(c.code for c in recording.closes),
        "events_delivered": sum(len(v) for v in recording.streams.values()),
        "notifications": len(recording.notifications),
        "mails_received": sum(recording.mails.values()),
        "died_mid_send": sorted(recording.died_mid_send),
    }


def counts(mapping: Mapping[Any, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(mapping.items(), key=str)) or "none"
