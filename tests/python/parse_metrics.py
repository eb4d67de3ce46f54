"""Parses a Prometheus text exposition (stdin) with the official Python client's
parser and prints it as JSON: {family: {"type": ..., "samples": [[name, labels, value]]}}.

Used by foreman's metrics test (crates/foreman/tests/it/metrics.rs), so that the page
is read by a real Prometheus parser, not by foreman's own code. Exits non-zero, with
the reason, when the page does not parse or breaks a rule the parser lets through:
a family without a TYPE, a sample outside its family, a histogram whose buckets are
not cumulative or whose +Inf bucket differs from its count, a counter that is negative.
Not a pytest module (no test_ prefix): pytest does not collect it.
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def main():
    text = sys.stdin.read()
    declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    if len(declared) != len(set(declared)):
        fail("a family is declared twice")
    out = {}
    for family in text_string_to_metric_families(text):
        if family.type not in SUFFIXES:
            fail(f"{family.name}: type {family.type} (no TYPE line?)")
        samples = []
        for sample in family.samples:
            if not any(sample.name == family.name + suffix for suffix in SUFFIXES[family.type]):
                fail(f"{sample.name} is outside its family {family.name}")
            if family.type == "counter" and sample.value < 0:
                fail(f"{sample.name} is negative")
            samples.append([sample.name, sample.labels, sample.value])
        if family.type == "histogram":
            check_histogram(family.name, samples)
        out[family.name] = {"type": family.type, "samples": samples}
    print(json.dumps(out))


def check_histogram(name, samples):
    series = {}
    for sample_name, labels, value in samples:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        entry = series.setdefault(key, {"buckets": [], "count": None})
        if sample_name.endswith("_bucket"):
            entry["buckets"].append((float(labels["le"]), value))
        elif sample_name.endswith("_count"):
            entry["count"] = value
    for key, entry in series.items():
        buckets = entry["buckets"]
        if not buckets or not math.isinf(buckets[-1][0]):
            fail(f"{name}{key}: no +Inf bucket")
        bounds = [bound for bound, _ in buckets]
        counts = [count for _, count in buckets]
        if bounds != sorted(bounds) or counts != sorted(counts):
            fail(f"{name}{key}: buckets not cumulative")
        if counts[-1] != entry["count"]:
            fail(f"{name}{key}: +Inf bucket {counts[-1]} but count {entry['count']}")


if __name__ == "__main__":
    main()
