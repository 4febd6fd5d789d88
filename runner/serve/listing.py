"""`GET <resource path>?state=…&limit=…&cursor=…`: a saga's instances, most recently changed first, paged.

Instances live in a KV bucket; the list walks its stream backwards (runner/jetstream/kv_scan.py), so
"newest" means most recently changed (the latest revision), and a page costs what it reads: a stream
info, then about one batched direct get per window of ~64 entries (with `history` > 1 one more, to skip
superseded revisions). A filter that matches rarely would read the whole bucket, so a request stops
reading after SCAN_BUDGET entries, SCAN_REQUESTS requests or SCAN_TIME (checked between windows; a
window reads at most 2,048 entries) and answers what it found with a cursor to continue: a page may
hold fewer than `limit` items, even none, and still have a `cursor`. Only `"cursor": null` means the
end. The list is no snapshot: an instance that changes while a client pages moves to the top, where a
listing started afresh finds it.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

from runner import codec
from runner.jetstream.kv_scan import NewestFirst
from runner.serve.http_guard import clip

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
SCAN_BUDGET = 4096  # entries read per request, at most (about: a window is read whole)
SCAN_REQUESTS = 64  # NATS requests per HTTP request, at most (about)
SCAN_TIME = 1.0  # seconds of reading per request, well inside the API's read deadline
PARAMETERS = ("state", "limit", "cursor")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,40}")
_POSITION = re.compile(r"before:([1-9][0-9]{0,18})")


class BadQuery(ValueError):
    def __init__(self, message: str, parameter: str):
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class ListQuery:
    state: str | None
    limit: int
    below: int | None  # continue beneath this stream sequence (from the cursor)


def parse_query(query: Mapping[str, str], states: Collection[str]) -> ListQuery:
    """The query string, checked; raises BadQuery naming the parameter at fault."""
    for name in query:
        if name not in PARAMETERS:
            raise BadQuery(f"unknown query parameter {clip(name)!r} (use {', '.join(PARAMETERS)})", clip(name))
    state = query.get("state")
    if state is not None and state not in states:
        raise BadQuery(f"state must be one of {', '.join(sorted(states))}", "state")
    raw_limit = query.get("limit", str(DEFAULT_LIMIT))
    if not (raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_LIMIT):
        raise BadQuery(f"limit must be a whole number from 1 to {MAX_LIMIT}", "limit")
    cursor = query.get("cursor")
    return ListQuery(state, int(raw_limit), None if cursor is None else decode_cursor(cursor))


def encode_cursor(below: int) -> str:
    return base64.urlsafe_b64encode(f"before:{below}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position in an opaque cursor this API handed out; anything else is a BadQuery."""
    bad = BadQuery("cursor is not one this API returned: start again without it", "cursor")
    if not _CURSOR.fullmatch(cursor):
        raise bad
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    match = _POSITION.fullmatch(text)
    if match is None:
        raise bad
    return int(match.group(1))


async def page(
    nc: Client, bucket: str, history: int, query: ListQuery, shape: Callable[[dict[str, Any]], Any]
) -> dict[str, Any]:
    """`{"items": [...], "cursor": next page's cursor or None}`; each item is `shape(instance)`."""
    items: list[Any] = []
    started = time.monotonic()
    async with NewestFirst(nc, bucket, history, below=query.below, timeout=SCAN_TIME) as walk:
        while True:
            window = await walk.next_window()
            if window is None:
                return {"items": items, "cursor": None}
            for entry in window.entries:
                record = codec.loads(entry.value)
                if query.state is not None and record.get("state") != query.state:
                    continue
                items.append(shape(record))
                if len(items) == query.limit:
                    return {"items": items, "cursor": encode_cursor(entry.seq)}
            spent = walk.read >= SCAN_BUDGET or walk.requests >= SCAN_REQUESTS
            if spent or time.monotonic() - started >= SCAN_TIME:
                return {"items": items, "cursor": encode_cursor(window.low)}
