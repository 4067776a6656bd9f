"""Schemathesis hooks for .ci/schemathesis: the rules of crier's API that an OpenAPI
document cannot state, applied to the cases schemathesis means as valid.

OpenAPI describes each query parameter alone. Three rules span parameters or need a
calendar, and the document states them in the parameters' descriptions:

- `period` is not given with `from`/`to`;
- `from` is before `to` (a date as `to` includes that whole day);
- a date exists (no 31 February), and `phone` is an email address or a number valid in
  the configured region (libphonenumber's rule).

A positive case that breaks one is made to keep it (the offending parameter dropped), so
positive_data_acceptance checks what the document promises. Negative cases are left as
generated: the server must refuse them whatever they break.
"""

from datetime import date, datetime, timedelta, timezone

import schemathesis

LOCAL_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")


def _instant(value, end):
    """The bound as a naive UTC-ish datetime, or None if it names no real instant."""
    text = value.strip()
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None
    if day is not None:
        start = datetime(day.year, day.month, day.day)
        return start + timedelta(days=1) if end else start
    for fmt in LOCAL_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return t


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    query = case.query
    if meta is None or not meta.generation.mode.is_positive or not isinstance(query, dict):
        return case
    if "period" in query:
        query.pop("from", None)
        query.pop("to", None)
    bounds = {}
    for name in ("from", "to"):
        if isinstance(query.get(name), str):
            bounds[name] = _instant(query[name], end=name == "to")
            if bounds[name] is None:
                query.pop(name)
    # Local times and instants in other zones differ by up to a day: keep a clear margin.
    if bounds.get("from") and bounds.get("to") and bounds["from"] + timedelta(days=1) >= bounds["to"]:
        query.pop("to")
    if isinstance(query.get("phone"), str) and "@" not in query["phone"]:
        query.pop("phone")
    return case
