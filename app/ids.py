"""Identifiers the server makes for what it indexes: request ids and job ids."""
from __future__ import annotations

import os
import time


def time_ordered_id() -> str:
    """32 hex digits (the form of uuid4().hex) that sort in time order: the milliseconds since 1970 in 12, then 80
    random bits, as UUIDv7 (RFC 9562) lays them out. An index on such ids grows at its end, where random ones land on
    any of its pages: the prediction log's request-id index and the jobs table's key, once they hold many rows, cost
    a writer several times more per row with random ids (benchmarks/results/monitoring-together.md)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
