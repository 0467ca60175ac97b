"""Prints each Panza benchmark beside its baseline, as a ratio, from the text output of
`swift package benchmark` (scripts/benchmark pipes it here).

Throughput figures are compared by their p50 (higher is better: ratio = Panza / baseline);
latency figures by their p50 wall clock (ratio = baseline / Panza, so that 1.0 means "as fast").
"""
import re
import sys

UNITS = {"": 1, "#": 1, "K": 1e3, "M": 1e6, "G": 1e9}
TIME_UNITS = {"ns": 1e-9, "μs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1}

# (Panza benchmark, baseline, what is compared)
PAIRS = [
    ("memory.hit.memoized-call", "baseline.mutex-dictionary.lookup", "throughput"),
    ("memory.hit.memoized-call", "memory.hit.memoized-call.metrics-off", "throughput"),
    ("memory.hit.memoized-call.tasks-8", "memory.hit.memoized-call.tasks-1", "throughput"),
    ("memory.hit.memoized-call.tasks-1", "memory.hit.memoized-call", "throughput"),
    ("memoize.key-hashing.string-int", "baseline.mutex-dictionary.lookup", "throughput"),
    ("sqlite.hit.memoized-call.tasks-1.readers-1", "baseline.sqlite-c.point-lookup", "throughput"),
    ("sqlite.hit.memoized-call.tasks-8.readers-1", "baseline.sqlite-c.point-lookup", "throughput"),
    ("sqlite.hit.memoized-call.tasks-8.readers-2", "baseline.sqlite-c.point-lookup", "throughput"),
    ("sqlite.hit.memoized-call.tasks-8.every-core.inline-2", "baseline.sqlite-c.point-lookup", "throughput"),
    ("sqlite.hit.memoized-call.tasks-8.every-core.inline-2", "sqlite.hit.memoized-call.tasks-1.readers-1", "throughput"),
    ("set.write-behind.drain-to-sqlite", "baseline.sqlite-c.inserts-one-transaction", "throughput"),
    ("envelope.encode.json-1kib", "baseline.lz4.compress.json-1kib", "throughput"),
    ("envelope.decode.json-1kib", "baseline.lz4.decompress.json-1kib", "throughput"),
    ("rate-limiter.acquire.uncontended", "baseline.mutex-dictionary.lookup", "throughput"),
    ("s3.get.signed.1kib.concurrency-32", "baseline.http.get.unsigned.1kib.concurrency-32", "throughput"),
    ("s3.get.signed.1kib.concurrency-32", "baseline.boto3.get.threads-32.requests-per-second", "throughput-vs-custom"),
    ("s3.put.signed.1kib.concurrency-32", "baseline.boto3.put.threads-32.requests-per-second", "throughput-vs-custom"),
    ("set.latency.write-behind.with-s3", "set.latency.write-behind.without-s3", "latency"),
    ("miss.latency.s3-healthy.loader-20ms", "baseline.loader.20ms", "latency"),
    ("miss.latency.s3-blackholed.breaker-closed.loader-20ms", "baseline.loader.20ms", "latency"),
    ("miss.latency.s3-blackholed.breaker-open.loader-20ms", "baseline.loader.20ms", "latency"),
    ("miss.latency.s3-slow-500ms.breaker-closed.loader-20ms", "baseline.loader.20ms", "latency"),
    ("miss.latency.s3-slow-500ms.breaker-open.loader-20ms", "baseline.loader.20ms", "latency"),
    ("sqlite.open.entries-1m", "sqlite.open.empty", "latency"),
    ("sqlite.hit.memoized-call.tasks-1.readers-1", "baseline.python-panza.sqlite-hit.tasks-1.calls-per-second", "throughput-vs-custom"),
    ("sqlite.hit.memoized-call.tasks-8.readers-2", "baseline.python-panza.sqlite-hit.tasks-8.calls-per-second", "throughput-vs-custom"),
    ("sqlite.hit.memoized-call.tasks-1.readers-1", "baseline.diskcache.memoize-hit.tasks-1.calls-per-second", "throughput-vs-custom"),
    ("sqlite.hit.memoized-call.tasks-8.readers-2", "baseline.diskcache.memoize-hit.tasks-8.calls-per-second", "throughput-vs-custom"),
    ("sqlite.hit.memoized-call.tasks-8.every-core.inline-2", "baseline.python-panza.sqlite-hit.tasks-8.calls-per-second", "throughput-vs-custom"),
    ("sqlite.hit.memoized-call.tasks-8.every-core.inline-2", "baseline.diskcache.memoize-hit.tasks-8.calls-per-second", "throughput-vs-custom"),
] + [
    (f"shared.{step}.{size}", f"baseline.sha256.{size}", "latency")
    for size in ("1kib", "64kib", "1mib")
    for step in ("sign", "verify", "encrypt", "decrypt")
] + [
    pair
    for size in ("64kib", "1mib", "64mib", "512mib")
    for pair in (
        (f"large.sqlite.write.{size}", f"baseline.sqlite-c.blob-write.{size}", "latency"),
        (f"large.sqlite.read.{size}", f"baseline.sqlite-c.blob-read.{size}", "latency"),
        (f"large.s3.write.{size}", f"baseline.s3-client.put.{size}", "latency"),
        (f"large.s3.read.{size}", f"baseline.http.get.unsigned.{size}", "latency"),
    )
]


def parse(text):
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    results = {}
    name = None
    for line in text.splitlines():
        if line and not line.startswith(("│", "╒", "╞", "├", "╘", " ")) and "%" not in line[:6]:
            name = line.strip()
            continue
        if name is None or not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        label, p50 = cells[0], cells[3] if len(cells) > 3 else None
        if p50 is None:
            continue
        try:
            value = float(p50)
        except ValueError:
            continue
        entry = results.setdefault(name, {})
        throughput = re.match(r"Throughput \(# / s\) \((\w*|#)\)", label)
        wall = re.match(r"Time \(wall clock\) \((\w+)\)", label)
        if throughput:
            entry["throughput"] = value * UNITS.get(throughput.group(1), 1)
        elif wall:
            entry["latency"] = value * TIME_UNITS.get(wall.group(1), 1)
        elif label.startswith("Memory"):
            entry["memory"] = value  # process-wide peak; not compared
        else:
            # A custom metric prints large values scaled: "calls/s (K)".
            scale = re.search(r"\((K|M|G)\)\s*$", label)
            entry["custom"] = value * (UNITS[scale.group(1)] if scale else 1)
    return results


def rate(entry):
    """Operations per second: from the p50 wall clock per operation when measured (more digits
    than the rounded throughput row), else from the throughput row."""
    if entry.get("latency"):
        return 1 / entry["latency"]
    return entry.get("throughput")


def main():
    results = parse(sys.stdin.read())
    print("\nPanza against its limits (p50; the same run):")
    for panza, baseline, kind in PAIRS:
        a, b = results.get(panza, {}), results.get(baseline, {})
        if kind == "throughput" and rate(a) and rate(b):
            print(f"  {rate(a):>14,.0f}/s  {panza}\n  {rate(b):>14,.0f}/s  {baseline}\n  {'':>14}  ratio {rate(a) / rate(b):.2f}\n")
        elif kind == "throughput-vs-custom" and rate(a) and "custom" in b:
            print(f"  {rate(a):>14,.0f}/s  {panza}\n  {b['custom']:>14,.0f}/s  {baseline}\n  {'':>14}  ratio {rate(a) / b['custom']:.2f}\n")
        elif kind == "latency" and "latency" in a and "latency" in b:
            print(f"  {a['latency'] * 1e6:>12.2f} µs  {panza}\n  {b['latency'] * 1e6:>12.2f} µs  {baseline}\n  {'':>14}  ratio {b['latency'] / a['latency']:.2f}\n")
    for name, entry in sorted(results.items()):
        if "custom" in entry and "boto3" not in name and "calls-per-second" not in name:
            print(f"  {entry['custom']:>14,.0f}    {name}")


if __name__ == "__main__":
    main()
