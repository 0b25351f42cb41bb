"""Cross-check nse.yaml's equity trading days with exchange_calendars' XBOM.

exchange_calendars (PyPI) ships BSE's trading sessions as `XBOM`, maintained
by other people from the exchanges' circulars; BSE and NSE equity share
their holidays. For every date both cover, the equity segment of
`rollouts/calendars/nse.yaml` must trade exactly when XBOM has a session,
except for the differences listed, each with its reason, in
`allowlist.txt` beside this file.

nse.yaml is read through muhurat itself (`muhurat calendar show nse -o json`)
so what is compared is what the controller uses, resolution rules and all.
Set MUHURAT_BIN to the binary (default: $CARGO_TARGET_DIR/debug/muhurat,
else target/debug/muhurat).

Dates on or after nse.yaml's `provisional_from` are compared too once the
pinned library covers them; there a difference where nse.yaml trades and
XBOM does not is the calendar's fail-safe rule at work (an unconfirmed
holiday is not encoded) and is reported, not failed. The other direction —
nse.yaml closed where XBOM trades — always fails: it would open time the
exchange trades.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import exchange_calendars as xcals
import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWLIST = Path(__file__).with_name("allowlist.txt")


def muhurat_bin() -> str:
    if os.environ.get("MUHURAT_BIN"):
        return os.environ["MUHURAT_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "debug" / "muhurat")


def nse_equity_days() -> tuple[dict[dt.date, bool], dt.date | None]:
    """Covered date -> does equity have a session; and provisional_from."""
    first = dt.date(2025, 1, 1)
    out = subprocess.run(
        [
            muhurat_bin(),
            "calendar",
            "show",
            "nse",
            "--calendars",
            str(ROOT / "rollouts" / "calendars"),
            "--from",
            first.isoformat(),
            "--days",
            "1500",
            "--segment",
            "equity",
            "-o",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    doc = json.loads(out.stdout)
    cal = doc["calendar"]
    assert dt.date.fromisoformat(cal["coverage"]["from"]) == first, cal
    days = {
        dt.date.fromisoformat(d["date"]): any(s["sessions"] for s in d["segments"])
        for d in doc["days"]
        if d["covered"]
    }
    prov = cal["provisional_from"]
    return days, dt.date.fromisoformat(prov) if prov else None


def xbom_days(first: dt.date, last: dt.date) -> set[dt.date]:
    cal = xcals.get_calendar("XBOM")
    lo = max(first, cal.first_session.date())
    hi = min(last, cal.last_session.date())
    if lo > hi:
        return set()
    return {s.date() for s in cal.sessions_in_range(lo.isoformat(), hi.isoformat())}


def xbom_bounds() -> tuple[dt.date, dt.date]:
    cal = xcals.get_calendar("XBOM")
    return cal.first_session.date(), cal.last_session.date()


def load_allowlist(text: str) -> dict[dt.date, tuple[str, str]]:
    """`DATE SIDE REASON` lines; `#` comments and blank lines ignored."""
    out: dict[dt.date, tuple[str, str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        assert len(parts) == 3, f"allowlist.txt:{n}: want DATE SIDE REASON: {line!r}"
        date, side, reason = parts
        assert side in ("nse", "xbom"), f"allowlist.txt:{n}: side {side!r} is not nse or xbom"
        assert len(reason) >= 20, f"allowlist.txt:{n}: give a real reason"
        d = dt.date.fromisoformat(date)
        assert d not in out, f"allowlist.txt:{n}: {d} listed twice"
        out[d] = (side, reason)
    return out


def compare(
    nse: dict[dt.date, bool],
    xbom: set[dt.date],
    first: dt.date,
    last: dt.date,
    allow: dict[dt.date, tuple[str, str]],
    provisional_from: dt.date | None,
) -> tuple[list[str], list[str], list[str]]:
    """(failures, fail-safe provisional differences, stale allow-list entries)
    over the dates first..last that both calendars cover."""
    failures, provisional, seen = [], [], set()
    d = first
    while d <= last:
        if d in nse:
            ours, theirs = nse[d], d in xbom
            if ours != theirs:
                side = "nse" if ours else "xbom"
                what = f"{d} ({d:%a}): nse.yaml {'trades' if ours else 'closed'}, XBOM {'trades' if theirs else 'closed'}"
                if allow.get(d, ("", ""))[0] == side:
                    seen.add(d)
                elif provisional_from and d >= provisional_from and side == "nse":
                    provisional.append(what)
                else:
                    failures.append(what)
        d += dt.timedelta(days=1)
    stale = [
        f"{d} {side}: {reason}"
        for d, (side, reason) in sorted(allow.items())
        if first <= d <= last and d not in seen
    ]
    return failures, provisional, stale


def test_nse_equity_days_match_xbom_except_the_allow_list():
    nse, provisional_from = nse_equity_days()
    lo, hi = xbom_bounds()
    first = max(min(nse), lo)
    last = min(max(nse), hi)
    assert first <= last, "XBOM and nse.yaml share no dates: raise the pinned exchange_calendars"
    # Both years of final data at least: a library that covers less would
    # make this test vacuous.
    assert (last - first).days >= 700, (first, last)
    allow = load_allowlist(ALLOWLIST.read_text())
    failures, provisional, stale = compare(
        nse, xbom_days(first, last), first, last, allow, provisional_from
    )
    print(f"compared {first}..{last}: {len(allow)} allowed, {len(provisional)} provisional")
    for p in provisional:
        print("provisional (fail-safe):", p)
    assert not failures, (
        "nse.yaml and XBOM disagree (fix nse.yaml, or list the date with its reason in allowlist.txt):\n"
        + "\n".join(failures)
    )
    assert not stale, "allowlist.txt entries that no longer match a difference:\n" + "\n".join(stale)


# ---------------------------------------------------------------------------
# The comparison itself, on made-up data: each rule can fail.

D = dt.date


def week(*closed: int) -> dict[dt.date, bool]:
    """Mon 2027-01-04 .. Sun 2027-01-10; weekdays trade unless listed."""
    return {
        D(2027, 1, 4) + dt.timedelta(days=i): i < 5 and i not in closed
        for i in range(7)
    }


XBOM_WEEK = {D(2027, 1, 4) + dt.timedelta(days=i) for i in range(5)}
FIRST, LAST = D(2027, 1, 4), D(2027, 1, 10)


def test_identical_calendars_agree():
    assert compare(week(), XBOM_WEEK, FIRST, LAST, {}, None) == ([], [], [])


def test_a_holiday_only_nse_has_fails_it_would_open_time():
    failures, _, _ = compare(week(2), XBOM_WEEK, FIRST, LAST, {}, None)
    assert failures == ["2027-01-06 (Wed): nse.yaml closed, XBOM trades"]


def test_a_weekend_session_only_nse_has_fails_unless_listed():
    nse = week()
    nse[D(2027, 1, 9)] = True
    failures, _, _ = compare(nse, XBOM_WEEK, FIRST, LAST, {}, None)
    assert failures == ["2027-01-09 (Sat): nse.yaml trades, XBOM closed"]
    allow = {D(2027, 1, 9): ("nse", "Budget Saturday special session")}
    assert compare(nse, XBOM_WEEK, FIRST, LAST, allow, None) == ([], [], [])
    # Listed on the wrong side: still a failure, and the entry is stale.
    wrong = {D(2027, 1, 9): ("xbom", "Budget Saturday special session")}
    failures, _, stale = compare(nse, XBOM_WEEK, FIRST, LAST, wrong, None)
    assert len(failures) == 1 and len(stale) == 1


def test_a_stale_allow_list_entry_fails():
    allow = {D(2027, 1, 5): ("nse", "was a special session once")}
    _, _, stale = compare(week(), XBOM_WEEK, FIRST, LAST, allow, None)
    assert stale == ["2027-01-05 nse: was a special session once"]


def test_provisional_dates_allow_only_the_fail_safe_direction():
    # XBOM knows a holiday on Wed that provisional nse.yaml does not encode:
    # nse.yaml blocks more — reported, not failed.
    xbom = XBOM_WEEK - {D(2027, 1, 6)}
    failures, provisional, _ = compare(week(), xbom, FIRST, LAST, {}, FIRST)
    assert failures == [] and provisional == ["2027-01-06 (Wed): nse.yaml trades, XBOM closed"]
    # The other way round opens time: a failure even when provisional.
    failures, provisional, _ = compare(week(2), XBOM_WEEK, FIRST, LAST, {}, FIRST)
    assert len(failures) == 1 and provisional == []


def test_allow_list_lines_are_checked():
    assert load_allowlist("# c\n\n2025-02-01  nse  Union Budget Saturday session\n") == {
        D(2025, 2, 1): ("nse", "Union Budget Saturday session")
    }
    for bad in ["2025-02-01 nse", "2025-02-01 both a long enough reason here", "2025-02-01 nse short"]:
        with pytest.raises(AssertionError):
            load_allowlist(bad)
