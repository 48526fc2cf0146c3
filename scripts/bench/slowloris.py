#!/usr/bin/env python3
"""Slow clients for scripts/bench/slowloris.sh: COUNT clients connect to 127.0.0.1:PORT
from source addresses 127.0.0.2.. (IPS of them, round robin), each sending a request head
one byte every INTERVAL seconds, never finishing it, and connecting again as soon as the
server ends it. Runs for SECS, then prints one JSON line: connections attempted, opened,
refused at connect, ended by the server (and how: an answer such as 408/503, a plain
close, a reset), the most open at once.

    slowloris.py PORT COUNT IPS INTERVAL SECS
"""
import asyncio
import json
import sys
import time

PORT, COUNT, IPS, INTERVAL, SECS = (
    int(sys.argv[1]),
    int(sys.argv[2]),
    int(sys.argv[3]),
    float(sys.argv[4]),
    float(sys.argv[5]),
)
HEAD = b"GET /never HTTP/1.1\r\nHost: bench\r\nX-Slow: " + b"a" * 100_000

stats = {
    "attempted": 0,
    "opened": 0,
    "refused": 0,
    "ended_by_server": 0,
    "answers": {},
    "open_now": 0,
    "open_max": 0,
}


async def slow(i, end):
    """One slow client: connects, trickles a head, and connects again whenever the server
    ends it, until `end`."""
    src = f"127.0.0.{2 + i % IPS}"
    while time.monotonic() < end:
        stats["attempted"] += 1
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", PORT, local_addr=(src, 0)), 10
            )
        except Exception:
            stats["refused"] += 1
            await asyncio.sleep(1)
            continue
        stats["opened"] += 1
        stats["open_now"] += 1
        stats["open_max"] = max(stats["open_max"], stats["open_now"])
        at = 0
        try:
            while time.monotonic() < end:
                writer.write(HEAD[at : at + 1])
                at += 1
                await writer.drain()
                try:
                    got = await asyncio.wait_for(reader.read(256), INTERVAL)
                except asyncio.TimeoutError:
                    continue
                # The server answered (a status line) or closed: this one is over.
                if got.startswith(b"HTTP/"):
                    status = got[9:12].decode("ascii", "replace")
                else:
                    status = "close"
                stats["answers"][status] = stats["answers"].get(status, 0) + 1
                stats["ended_by_server"] += 1
                break
        except (ConnectionError, OSError):
            stats["answers"]["reset"] = stats["answers"].get("reset", 0) + 1
            stats["ended_by_server"] += 1
        finally:
            stats["open_now"] -= 1
            writer.close()


async def main():
    end = time.monotonic() + SECS
    tasks = []
    # Opened over the first few seconds (a burst of connects, as an attacker would).
    for i in range(COUNT):
        tasks.append(asyncio.create_task(slow(i, end)))
        if i % 500 == 499:
            await asyncio.sleep(0.05)
    await asyncio.gather(*tasks, return_exceptions=True)
    out = dict(stats)
    out.pop("open_now")
    print(json.dumps(out))


asyncio.run(main())
