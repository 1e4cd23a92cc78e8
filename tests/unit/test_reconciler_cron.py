"""The reconciler's cron rule: which expressions are taken, which refused and why, and the times they give.

``cronsim`` does the calendar math; the 5-field rule, the descriptors, the
time-zone prefix and the messages are ours.
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from cni_ipam.reconciler.cron import CronError, parse

UTC = timezone.utc
try:
    BERLIN = ZoneInfo("Europe/Berlin")
except ZoneInfoNotFoundError:
    BERLIN = None
needs_tzdata = pytest.mark.skipif(BERLIN is None, reason="no time zone database here (apt-get install tzdata)")


def at(*fields, tz=UTC) -> datetime:
    return datetime(*fields, tzinfo=tz)


def runs(expression: str, start: datetime, count: int) -> list:
    """The next ``count`` run times after ``start``, each found from the one before, as UTC ISO strings."""
    schedule = parse(expression)
    out, when = [], start
    for _ in range(count):
        when = schedule.next_after(when)
        out.append(when.isoformat().replace("+00:00", "Z"))
    return out


# --- valid forms ---

@pytest.mark.parametrize("expression, start, expected", [
    ("30 4 * * *", at(2026, 1, 1), ["2026-01-01T04:30:00Z", "2026-01-02T04:30:00Z"]),
    ("*/15 * * * *", at(2026, 1, 1, 0, 1), ["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"]),
    ("0,20,40 9 * * *", at(2026, 1, 1, 9, 0), ["2026-01-01T09:20:00Z", "2026-01-01T09:40:00Z"]),  # list
    ("5 9-11 * * *", at(2026, 1, 1, 10, 0), ["2026-01-01T10:05:00Z", "2026-01-01T11:05:00Z"]),  # range
    ("0 8-18/5 * * *", at(2026, 1, 1), ["2026-01-01T08:00:00Z", "2026-01-01T13:00:00Z"]),  # stepped range
    ("0 0 * JAN,mar *", at(2026, 1, 31, 12), ["2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"]),  # month names
    ("0 12 * * MON-FRI", at(2026, 11, 27, 13), ["2026-11-30T12:00:00Z", "2026-12-01T12:00:00Z"]),  # Fri -> Mon
    ("0 0 * * 7", at(2026, 11, 27), ["2026-11-29T00:00:00Z", "2026-12-06T00:00:00Z"]),  # 7 is Sunday
    ("0 0 13 * 5", at(2026, 11, 1), ["2026-11-06T00:00:00Z", "2026-11-13T00:00:00Z"]),  # 13th OR Friday
    ("0 0 ? * SUN", at(2026, 11, 27), ["2026-11-29T00:00:00Z", "2026-12-06T00:00:00Z"]),  # ? is *
    ("@daily", at(2026, 1, 1, 12), ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]),
    ("@hourly", at(2026, 1, 1, 12, 30), ["2026-01-01T13:00:00Z", "2026-01-01T14:00:00Z"]),
    ("@weekly", at(2026, 11, 27), ["2026-11-29T00:00:00Z", "2026-12-06T00:00:00Z"]),
    ("@yearly", at(2026, 6, 1), ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]),
    ("  */5 * * * *\n", at(2026, 1, 1, 0, 4), ["2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z"]),  # as a file holds it
])
def test_valid_expressions_and_their_next_runs(expression, start, expected):
    assert runs(expression, start, len(expected)) == expected


def test_next_run_is_strictly_after_the_time_given():
    schedule = parse("30 4 * * *")
    assert schedule.next_after(at(2026, 1, 1, 4, 30)) == at(2026, 1, 2, 4, 30)
    assert schedule.next_after(at(2026, 1, 1, 4, 29, 59)) == at(2026, 1, 1, 4, 30)


def test_next_run_needs_an_aware_time():
    with pytest.raises(ValueError, match="aware"):
        parse("* * * * *").next_after(datetime(2026, 1, 1))


# --- month ends ---

@pytest.mark.parametrize("expression, start, expected", [
    # the 31st skips the months that have none
    ("0 0 31 * *", at(2026, 1, 31, 1), ["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"]),
    # the 30th skips February
    ("0 6 30 * *", at(2026, 1, 30, 7), ["2026-03-30T06:00:00Z", "2026-04-30T06:00:00Z"]),
    # the 29th of February waits for a leap year
    ("0 0 29 2 *", at(2026, 3, 1), ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]),
    # the last day of the month (cronsim's L)
    ("0 0 L * *", at(2026, 1, 31, 1), ["2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z", "2026-04-30T00:00:00Z"]),
    # across the year end, and 23:59 to midnight
    ("59 23 31 12 *", at(2026, 12, 31, 23, 59), ["2027-12-31T23:59:00Z"]),
    ("*/20 * * * *", at(2026, 1, 31, 23, 41), ["2026-02-01T00:00:00Z", "2026-02-01T00:20:00Z"]),
])
def test_next_runs_across_month_ends(expression, start, expected):
    assert runs(expression, start, len(expected)) == expected


# --- daylight-saving time (with CRON_TZ; cronsim behaves like cronie) ---

@needs_tzdata
def test_spring_forward_runs_a_skipped_time_once_after_the_gap():
    # Europe/Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that day
    found = runs("CRON_TZ=Europe/Berlin 30 2 * * *", at(2026, 3, 28, 12), 3)
    assert found == ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]
    local = [datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(BERLIN).strftime("%m-%d %H:%M %Z")
             for t in found]
    assert local == ["03-29 03:00 CEST", "03-30 02:30 CEST", "03-31 02:30 CEST"]


@needs_tzdata
def test_fall_back_runs_a_repeated_time_once():
    # Europe/Berlin 2026-10-25: 03:00 CEST goes back to 02:00 CET, so 02:30 happens twice; cron runs it once
    found = runs("CRON_TZ=Europe/Berlin 30 2 * * *", at(2026, 10, 24, 12), 3)
    assert found == ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"]


@needs_tzdata
def test_fall_back_hourly_runs_both_two_oclocks():
    found = runs("TZ=Europe/Berlin 0 * * * *", at(2026, 10, 24, 22, 30), 4)
    assert found == ["2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"]


def test_utc_is_the_default_zone_so_dst_never_moves_a_run():
    assert runs("30 2 * * *", at(2026, 3, 28, 12), 2) == ["2026-03-29T02:30:00Z", "2026-03-30T02:30:00Z"]


# --- refused ---

def test_six_fields_are_refused_saying_why():
    with pytest.raises(CronError) as caught:
        parse("0 */15 * * * *")
    message = str(caught.value)
    assert "'0 */15 * * * *' has 6 fields" in message
    assert "a seconds field is not supported" in message
    assert "minute hour day-of-month month day-of-week" in message
    assert "'*/15 * * * *'" in message  # what it would be without the seconds


@pytest.mark.parametrize("expression, words", [
    ("", "empty"),
    ("   \n", "empty"),
    ("*/5 * * *", "has 4 fields"),
    ("0 0 0 * * * *", "has 7 fields"),
    ("every day", "has 2 fields"),
    ("61 * * * *", "the minute field '61' is not valid (allowed: 0-59"),
    ("* 24 * * *", "the hour field '24' is not valid (allowed: 0-23"),
    ("* * 0 * *", "the day-of-month field '0' is not valid"),
    ("0 0 30 2 *", "the day-of-month field '30' is not valid"),  # no February has a 30th
    ("* * * 13 *", "the month field '13' is not valid (allowed: 1-12 or JAN-DEC"),
    ("* * * * 8", "the day-of-week field '8' is not valid (allowed: 0-7"),
    ("* * * * FUNDAY", "the day-of-week field 'FUNDAY' is not valid"),
    ("*/0 * * * *", "the minute field '*/0' is not valid"),
    ("5-1 * * * *", "the minute field '5-1' is not valid"),
    ("a b c d e", "the minute field 'a' is not valid"),
    ("@reboot", "not a known descriptor"),
    ("@every 5m", "@every is an interval"),
    ("CRON_TZ=Mars/Olympus 0 0 * * *", "'Mars/Olympus' is not a time zone"),
    ("CRON_TZ=UTC", "names a time zone but no schedule"),
])
def test_garbage_is_refused_with_the_reason(expression, words):
    with pytest.raises(CronError) as caught:
        parse(expression)
    assert words in str(caught.value)


def test_a_non_string_is_refused():
    with pytest.raises(CronError, match="a cron expression is a string, not int"):
        parse(30)


def test_equal_schedules_compare_equal_whatever_the_spelling():
    assert parse("@daily") == parse("0 0 * * *")
    assert parse("0 0 ? * *") == parse("0 0 * * *")
    assert parse("0 0 * * *") != parse("TZ=Europe/Berlin 0 0 * * *")
    assert parse("*/5 * * * *") != parse("*/7 * * * *")


@needs_tzdata
def test_explain_names_the_zone():
    assert parse("30 4 * * *").explain() == "At 04:30 every day (UTC)"
    assert parse("CRON_TZ=Europe/Berlin 30 4 * * *").explain().endswith("(Europe/Berlin)")
