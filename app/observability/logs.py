"""Log lines: plain text for people, or one JSON object a line for log collectors, each carrying
the id of the HTTP request it belongs to.

`ORDERPULSE_LOG_FORMAT` chooses: `text` (the default) or `json`, whose objects have `time`
(ISO 8601, UTC), `level`, `logger`, `message` and `request_id` (null outside a request), and
`exc_info` when there is a traceback. The request id comes from `X-Request-ID`: the client's if it
sent a sane one, else a new one; every HTTP response carries it back (`request_id_middleware`).
Uvicorn's own loggers go through the same handler, in every worker.

The handler (`app.kernel.log_batching.LoopBatchedStreamHandler`) writes the INFO lines logged on
the event loop's thread together; from the app's shutdown on (`write_at_once`), every line is
written when logged.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware, correlation_id
from pythonjsonlogger.json import JsonFormatter
from starlette.middleware import Middleware

from app.kernel.log_batching import LoopBatchedStreamHandler

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
"""What a client's request id may be: printable, no spaces or quotes, at most 128 characters (it
goes into every log line of the request)."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def is_sane_request_id(value: str) -> bool:
    return _SANE_REQUEST_ID.match(value) is not None


def request_id_middleware() -> Middleware:
    """Pure ASGI: takes or makes the request id, and adds `X-Request-ID` to the response.

    Place it after the websocket shortcut: websockets do not pass through it.
    """
    return Middleware(
        CorrelationIdMiddleware,
        header_name=REQUEST_ID_HEADER,
        update_request_header=True,
        validator=is_sane_request_id,
    )


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or None) on every record as `request_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = correlation_id.get()
        return True


class JsonLogFormatter(JsonFormatter):
    """One JSON object a line: time, level, logger, message, request_id."""

    def __init__(self, **_: Any) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}{request_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextLogFormatter(logging.Formatter):
    def __init__(self, **_: Any) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        return super().format(record)


def write_at_once() -> None:
    """From now on, the process's batching handlers write every line when it is logged (after
    what is waiting): the process is shutting down."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LoopBatchedStreamHandler):
            handler.write_at_once()


def logging_config(log_format: str, *, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the CLI and for uvicorn (which applies it in every
    worker): one handler on stderr, the chosen format, uvicorn's loggers through it."""
    formatter = JsonLogFormatter if log_format == "json" else TextLogFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "default": {
                "class": "app.kernel.log_batching.LoopBatchedStreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
