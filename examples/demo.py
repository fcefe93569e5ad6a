"""A small program with a known shape, profiled with spprof's API.

    python3 examples/demo.py        # writes demo.svg, demo.json, demo.collapsed
"""

import json
import re
import threading

import spprof


def parse_records(n):
    text = json.dumps([{"id": i, "name": "item-%d" % i, "tags": ["a", "b"]} for i in range(n)])
    return json.loads(text)


def match_names(records):
    pattern = re.compile(r"item-(\d+)7$")
    return sum(1 for r in records if pattern.search(r["name"]))


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def background():
    for _ in range(15):
        fib(20)


def main():
    worker = threading.Thread(target=background, name="fib-worker")
    with spprof.Profiler(interval_ms=1) as prof:
        worker.start()
        for _ in range(20):
            match_names(parse_records(5000))
        worker.join()
    p = prof.profile
    for path in ("demo.svg", "demo.json", "demo.collapsed"):
        p.save(path)
    print("%d samples (%.0f ms of CPU, %.0f samples per CPU-second, clock %s), %d dropped"
          % (p.sample_count, p.sampled_time_ms, p.effective_rate_hz, p.clock, p.dropped_count))
    print("wrote demo.svg (open in a browser), demo.json (speedscope), demo.collapsed (flamegraph.pl)")


if __name__ == "__main__":
    main()
