"""How late this host wakes a sleeping process: the floor under any load generator's send lateness.

`python -m testbed.bench.hostjitter [SECONDS]` sleeps to absolute times 1 ms apart with plain `time.sleep`
(clock_nanosleep since Python 3.11; no gevent, no HTTP) and prints JSON with the wake-up lateness
percentiles in microseconds. On a virtual machine whose vCPUs the host preempts, the p99 can exceed the
2 ms a trial may be late at p99, and then no generator can keep that limit there: measured on the 2-core
development VM, p99 2.1-3.5 ms both from Python and from a C `clock_nanosleep` loop, with nothing else
running.
"""

from __future__ import annotations

import json
import sys
import time

from testbed.loadgen.result import new_histogram, record


def measure(seconds: float, *, period_s: float = 0.001) -> dict[str, float]:
    histogram = new_histogram()
    start = time.perf_counter() + 0.01
    for i in range(int(seconds / period_s)):
        due = start + i * period_s
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        record(histogram, time.perf_counter() - due)
    return {
        "p50_us": histogram.get_value_at_percentile(50),
        "p90_us": histogram.get_value_at_percentile(90),
        "p99_us": histogram.get_value_at_percentile(99),
        "max_us": histogram.get_max_value(),
    }


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    print(json.dumps(measure(seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
