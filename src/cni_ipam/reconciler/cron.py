"""The reconciler's schedule: a 5-field cron expression.

The accepted forms are those of whereabouts' reconciler (robfig/cron's
``ParseStandard``): ``minute hour day-of-month month day-of-week``, each a
``*``, a number, a name (``JAN``..``DEC``, ``SUN``..``SAT``, any case), a
range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of these; ``?``
means ``*`` in the two day fields; the descriptors ``@yearly``,
``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight`` and
``@hourly``; and an optional ``CRON_TZ=<zone>`` (or ``TZ=<zone>``) prefix.
Times are in UTC unless a zone is given, as in whereabouts.

Counting the fields is ours: a 6th field (seconds) is refused, because
``cronsim`` -- which does the calendar math, including months of different
lengths and daylight-saving changes the way cronie does -- would quietly
take it.  ``cronsim`` also knows ``L`` and ``n#k``; they are accepted as a
superset of whereabouts' syntax.
"""

from __future__ import annotations

from datetime import datetime, timezone

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
ALLOWED = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, or L for the last day",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 (0 and 7 are Sunday) or SUN-SAT",
}
DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FORM = "5 fields: minute hour day-of-month month day-of-week, e.g. \"*/15 * * * *\""


class CronError(ValueError):
    """An expression that cannot be used; the message says exactly why."""


class CronSchedule:
    """A validated expression and the zone its times are in."""

    __slots__ = ("text", "fields", "zone")

    def __init__(self, text: str, fields: str, zone) -> None:
        self.text = text  # as given (trimmed): what the logs show
        self.fields = fields  # the 5 fields cronsim gets
        self.zone = zone  # a tzinfo, or None for UTC

    def next_after(self, when: datetime) -> datetime:
        """The first run time strictly after ``when`` (an aware datetime), in UTC."""
        from cronsim import CronSim

        if when.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        local = when.astimezone(self.zone or timezone.utc)
        return next(CronSim(self.fields, local)).astimezone(timezone.utc)

    def explain(self) -> str:
        """cronsim's English reading of the fields ("At 04:30"), or "" when it has none."""
        from cronsim import CronSim

        try:
            text = CronSim(self.fields, datetime(2000, 1, 1)).explain()
        except Exception:  # explain() is a nicety for the logs only
            return ""
        zone = getattr(self.zone, "key", None)
        return f"{text} ({zone})" if zone else f"{text} (UTC)"

    def __eq__(self, other) -> bool:
        return isinstance(other, CronSchedule) and (self.fields, _zone_name(self.zone)) == (
            other.fields, _zone_name(other.zone))

    def __hash__(self) -> int:
        return hash((self.fields, _zone_name(self.zone)))

    def __repr__(self) -> str:
        return f"CronSchedule({self.text!r})"


def _zone_name(zone) -> str:
    return getattr(zone, "key", "UTC") if zone is not None else "UTC"


def parse(text: str) -> CronSchedule:
    """A :class:`CronSchedule` for ``text``, or :class:`CronError` saying what is wrong with it."""
    if not isinstance(text, str):
        raise CronError(f"a cron expression is a string, not {type(text).__name__} {text!r}")
    given = text.strip()
    if not given:
        raise CronError(f"the cron expression is empty; expected {FORM}")
    body, zone = given, None
    head = body.split(None, 1)
    if head[0].startswith(("CRON_TZ=", "TZ=")):
        if len(head) == 1:
            raise CronError(f"{given!r} names a time zone but no schedule; expected {FORM} after it")
        zone = _zone(given, head[0].split("=", 1)[1])
        body = head[1].strip()
    if body.startswith("@"):
        fields = DESCRIPTORS.get(body.lower())
        if fields is None:
            if body.lower().startswith("@every"):
                raise CronError(f"{given!r}: @every is an interval, not a cron expression; write it as {FORM}")
            raise CronError(f"{given!r} is not a known descriptor; use one of {', '.join(DESCRIPTORS)} or {FORM}")
        return CronSchedule(given, fields, zone)
    parts = body.split()
    if len(parts) == 6:
        raise CronError(f"{given!r} has 6 fields, but a seconds field is not supported: only {FORM}. "
                        f"Without its leading seconds field it would read {' '.join(parts[1:])!r}")
    if len(parts) != 5:
        raise CronError(f"{given!r} has {len(parts)} field{'s' if len(parts) != 1 else ''}; expected {FORM}")
    parts = [p if not (i in (2, 4) and p == "?") else "*" for i, p in enumerate(parts)]
    fields = " ".join(parts)
    _check(given, fields)
    return CronSchedule(given, fields, zone)


def _zone(given: str, name: str):
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(name)
    except Exception:
        raise CronError(f"{given!r}: {name!r} is not a time zone this machine knows "
                        f"(e.g. Europe/Berlin, UTC)") from None


def _check(given: str, fields: str) -> None:
    """Let cronsim parse the fields and turn its "Bad hour" into a message naming the value and the limits."""
    from cronsim import CronSim, CronSimError

    try:
        CronSim(fields, datetime(2000, 1, 1))
    except CronSimError as exc:
        message = str(exc)
        name = message[4:] if message.startswith("Bad ") else ""
        if name in FIELDS:
            value = fields.split()[FIELDS.index(name)]
            extra = "; and the day must exist in the months given" if name == "day-of-month" else ""
            raise CronError(f"{given!r}: the {name} field {value!r} is not valid (allowed: {ALLOWED[name]}, as "
                            f"*, a value, a range a-b, a step */n or a-b/n, or a comma list{extra})") from None
        raise CronError(f"{given!r}: {message}; expected {FORM}") from None
