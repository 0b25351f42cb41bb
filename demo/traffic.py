#!/usr/bin/env python3
"""The demo's traffic: GET a loopback URL at about --rps requests a second,
for at most --duration seconds, one new connection per request (so HAProxy
balances every request), and append one line per request to --log:

    <unix time in ms> <pool> <status>   pool: the first word of the body
                                        (blue or green); status: 200, 500…
    <unix time in ms> - <error>         the request failed (refused, timeout…)

It only ever talks to 127.0.0.1.
"""
import argparse
import http.client
import time
import urllib.parse


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--rps", type=float, default=40)
    p.add_argument("--duration", type=float, default=300)
    a = p.parse_args()
    u = urllib.parse.urlsplit(a.url)
    if u.hostname != "127.0.0.1" or u.scheme != "http":
        raise SystemExit(f"traffic.py only sends to http://127.0.0.1, not {a.url}")
    path = u.path or "/"
    gap = 1.0 / a.rps
    end = time.monotonic() + a.duration
    nxt = time.monotonic()
    with open(a.log, "a", buffering=1) as log:
        while time.monotonic() < end:
            try:
                c = http.client.HTTPConnection("127.0.0.1", u.port, timeout=2)
                c.request("GET", path, headers={"Connection": "close"})
                r = c.getresponse()
                body = r.read().decode("utf-8", "replace").split()
                c.close()
                pool = body[0] if body and body[0].isalnum() else "-"
                what = f"{pool} {r.status}"
            except Exception as e:  # a refused or timed-out request is data too
                what = "- " + type(e).__name__
            log.write(f"{int(time.time() * 1000)} {what}\n")
            nxt += gap
            pause = nxt - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                nxt = time.monotonic()  # fell behind: do not burst to catch up


if __name__ == "__main__":
    main()
