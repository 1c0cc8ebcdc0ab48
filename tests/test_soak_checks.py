"""The soak's checks catch what they claim to (issue 23): a recording that passes, then the same
recording with one planted fault each (a lost event, a duplicate, a reordering, an event the
subscriber may not see, a missing mail, a mail sent twice without a crash, a bare 500, a 1006
outside a kill, a growing worker), and each check fails on exactly its own fault."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from scripts.soak_checks import (
    HttpRecord,
    Recording,
    Window,
    WsClose,
    memory_trends,
    per_minute_latency,
    slope_bytes_per_hour,
    verdict,
)

MB = 1024 * 1024


def clean() -> Recording:
    """A run in which nothing went wrong: faults answered as SPEC 8 says."""
    return Recording(
        windows=[
            Window("postgres restart", 100.0, 115.0),
            Window("worker killed", 200.0, 210.0, kills_a_worker=True),
        ],
        http=[
            HttpRecord("read", 10.0, 10.01, 200),
            HttpRecord("write", 70.0, 70.03, 200),
            HttpRecord("read", 101.0, 101.01, 503, retry_after=True),
            HttpRecord("write", 201.0, 201.5, 0),  # the killed worker's connection
            HttpRecord("read", 300.0, 300.02, 200),
        ],
        closes=[WsClose(102.0, 1013), WsClose(200.5, 1006), WsClose(101.0, 1012)],
        streams={"s1/order_status": [3, 5, 8, 9], "s2/notification": [4, 6, 7]},
        visible={"s1/order_status": [3, 5, 8, 9], "s2/notification": [4, 6, 7]},
        notifications={"<a@x>": "SENT", "<b@x>": "SENT", "<c@x>": "SENT"},
        expected_notifications=3,
        mails={"<a@x>": 1, "<b@x>": 2, "<c@x>": 1},
        died_mid_send={"<b@x>"},
        rss={"worker-1": [(60.0 * m, 100 * MB + (m % 2) * 100_000) for m in range(1, 40)]},
        warmup_seconds=120.0,
    )


def test_a_clean_run_passes() -> None:
    assert verdict(clean()) == {
        "streams": [],
        "mail": [],
        "http": [],
        "websockets": [],
        "memory": [],
    }


def lose_an_event(r: Recording) -> None:
    r.streams["s1/order_status"].remove(8)


def duplicate_an_event(r: Recording) -> None:
    r.streams["s2/notification"].insert(2, 6)


def reorder_events(r: Recording) -> None:
    r.streams["s1/order_status"][1:3] = [8, 5]


def deliver_a_foreign_event(r: Recording) -> None:
    r.streams["s2/notification"].append(12)


def lose_a_mail(r: Recording) -> None:
    del r.mails["<c@x>"]


def send_a_mail_twice_without_a_crash(r: Recording) -> None:
    r.mails["<a@x>"] = 2


def send_a_mail_twice_that_no_worker_died_sending(r: Recording) -> None:
    """A worker did die mid-send (`<b@x>`), but this duplicate is of another message."""
    r.mails["<c@x>"] = 2


def resend_under_another_message_id(r: Recording) -> None:
    """The died-mid-send mail resent under a Message-ID of its own: the same mail twice, but
    the recipient cannot tell it is a duplicate."""
    r.mails["<b@x>"] = 1
    r.mails["<b-again@x>"] = 1


def leave_a_notification_pending(r: Recording) -> None:
    r.notifications["<c@x>"] = "PENDING"


def never_create_a_notification(r: Recording) -> None:
    r.expected_notifications = 4


def answer_a_bare_500(r: Recording) -> None:
    r.http.append(HttpRecord("write", 101.0, 101.2, 500))


def answer_503_without_retry_after(r: Recording) -> None:
    r.http.append(HttpRecord("read", 102.0, 102.1, 503))


def fail_outside_a_window(r: Recording) -> None:
    r.http.append(HttpRecord("read", 150.0, 150.1, 503, retry_after=True))


def drop_a_socket_without_a_frame(r: Recording) -> None:
    r.closes.append(WsClose(103.0, 1006))  # a database restart: the server was there to say 1013


def close_a_socket_outside_a_window(r: Recording) -> None:
    r.closes.append(WsClose(160.0, 1011))


def grow_memory(r: Recording) -> None:
    r.rss["worker-1"] = [(60.0 * m, 100 * MB + m * MB) for m in range(1, 40)]  # 60 MB/hour


PLANTED: dict[str, tuple[Callable[[Recording], None], str, str]] = {
    "lost event": (lose_an_event, "streams", "s1/order_status: lost events [8] (1 in all)"),
    "duplicate": (duplicate_an_event, "streams", "s2/notification: duplicate events [6]"),
    "reordering": (reorder_events, "streams", "s1/order_status: out of order [(8, 5)]"),
    "foreign event": (
        deliver_a_foreign_event,
        "streams",
        "s2/notification: events it may not see (or not in the log) [12]",
    ),
    "missing mail": (lose_a_mail, "mail", "1 notifications never reached the sink: ['<c@x>']"),
    "mail twice": (
        send_a_mail_twice_without_a_crash,
        "mail",
        "1 mails delivered twice without a crash: ['<a@x>']",
    ),
    "mail twice beside a crash": (
        send_a_mail_twice_that_no_worker_died_sending,
        "mail",
        "1 mails delivered twice without a crash: ['<c@x>']",
    ),
    "resent under another Message-ID": (
        resend_under_another_message_id,
        "mail",
        "1 mails of no notification (a resend under another Message-ID?): ['<b-again@x>']",
    ),
    "pending": (leave_a_notification_pending, "mail", "1 notifications not SENT: ['<c@x>']"),
    "not created": (never_create_a_notification, "mail", "4 notifications called for, 3 exist"),
    "bare 500": (
        answer_a_bare_500,
        "http",
        "HTTP failures inside fault windows other than 503: {'500 without Retry-After': 1}",
    ),
    "503 without Retry-After": (
        answer_503_without_retry_after,
        "http",
        "HTTP failures inside fault windows other than 503: {'503 without Retry-After': 1}",
    ),
    "failure outside a window": (
        fail_outside_a_window,
        "http",
        "HTTP failures outside fault windows: {'503': 1}",
    ),
    "1006 without a kill": (
        drop_a_socket_without_a_frame,
        "websockets",
        "websocket closes inside fault windows without 1012/1013: {1006: 1}",
    ),
    "close outside a window": (
        close_a_socket_outside_a_window,
        "websockets",
        "websocket closes outside fault windows: {1011: 1}",
    ),
    "memory growth": (
        grow_memory,
        "memory",
        "worker-1: memory grows 60.0 MB/hour after the warm-up (flat: under 20 MB/hour)",
    ),
}


@pytest.mark.parametrize("fault", list(PLANTED))
def test_each_check_fails_on_its_planted_fault(fault: str) -> None:
    plant, check, problem = PLANTED[fault]
    recording = copy.deepcopy(clean())
    plant(recording)
    found = verdict(recording)
    assert found[check] == [problem]
    assert all(problems == [] for name, problems in found.items() if name != check), found


def test_a_died_mid_send_duplicate_with_the_same_message_id_passes() -> None:
    """The clean run's `<b@x>` reached the sink twice, under its own Message-ID, and was being
    sent when a worker died; without that record, the same two copies fail."""
    recording = clean()
    assert recording.mails["<b@x>"] == 2 and recording.died_mid_send == {"<b@x>"}
    assert verdict(recording)["mail"] == []
    recording.died_mid_send = set()
    assert verdict(recording)["mail"] == ["1 mails delivered twice without a crash: ['<b@x>']"]


def test_memory_is_reported_but_not_judged_over_a_short_run() -> None:
    recording = clean()
    recording.rss["worker-1"] = [(60.0 * m, 100 * MB + m * MB) for m in range(1, 6)]
    trends, problems = memory_trends(recording)
    assert problems == []
    assert trends["worker-1"]["judged"] is False
    assert trends["worker-1"]["slope_bytes_per_hour"] == 60 * MB


def test_a_restarted_worker_is_judged_after_its_own_warm_up() -> None:
    recording = clean()
    warming = [(1000.0 + 60 * m, 90 * MB + min(m, 2) * 5 * MB) for m in range(0, 20)]
    recording.rss["worker-2"] = warming  # grew 10 MB in its first 2 minutes, then flat
    trends, problems = memory_trends(recording)
    assert problems == []
    assert trends["worker-2"]["slope_bytes_per_hour"] == 0
    assert trends["worker-2"]["judged"] is True


def test_slope_and_latency_figures() -> None:
    assert slope_bytes_per_hour([(0.0, 0), (1800.0, MB), (3600.0, 2 * MB)]) == 2 * MB
    assert slope_bytes_per_hour([(0.0, 0), (1.0, 1)]) is None
    rows = per_minute_latency(
        [HttpRecord("read", 1.0, 1.010, 200), HttpRecord("read", 2.0, 2.030, 200),
         HttpRecord("write", 61.0, 61.1, 200), HttpRecord("write", 62.0, 62.2, 503)]
    )  # fmt: skip
    assert rows == [
        {
            "minute": 0,
            "read": {"count": 2, "p50_ms": 30.0, "p99_ms": 30.0},
            "write": {"count": 0, "p50_ms": None, "p99_ms": None},
        },
        {
            "minute": 1,
            "read": {"count": 0, "p50_ms": None, "p99_ms": None},
            "write": {"count": 1, "p50_ms": 100.0, "p99_ms": 100.0},
        },
    ]
