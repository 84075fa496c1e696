"""The ceiling for any gevent-based Python client on this machine: geventhttpclient alone, closed loop.

`python -m testbed.bench.rawclient URL SECONDS` prints JSON `{"rps", "cpu_us_per_request"}`. No Locust, no
schedule, no histogram: what the engine cannot beat, measured in the same run as the engine.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 (after the monkey-patching, as gevent requires)
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from geventhttpclient import HTTPClient  # noqa: E402


def main() -> int:
    url, seconds = sys.argv[1], float(sys.argv[2])
    parts = urlsplit(url)
    client = HTTPClient(parts.hostname or "127.0.0.1", parts.port or 80, concurrency=1)
    path = parts.path or "/"

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    n, c0, t0 = 0, cpu(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        client.get(path).read()
        n += 1
    wall, used = time.perf_counter() - t0, cpu() - c0
    print(json.dumps({"rps": round(n / wall, 1), "cpu_us_per_request": round(used / n * 1e6, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
