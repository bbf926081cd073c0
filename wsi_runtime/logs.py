"""Log output: text for a person at a terminal, or one JSON object per line
for a log shipper. Lines that are already JSON objects (the scheduler's job
transitions) are written as they are, so they stay one parseable object each."""

from __future__ import annotations

import json
import logging

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STRUCTURED_LOGGERS = ("wsi.scheduler.transitions",)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, separators=(",", ":"))


class AsIs(logging.Formatter):
    """For loggers whose messages are JSON objects already."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def configure(level: str, fmt: str = "text") -> None:
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    structured = logging.StreamHandler()
    structured.setFormatter(AsIs())
    for name in STRUCTURED_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [structured]
        logger.propagate = False
