#!/usr/bin/env python3
"""Turn the raw rows of scripts/bench.sh (round, target, workload, metric,
value; tab-separated) into one markdown table: medians over rounds of the
absolute figures, of the per-round ratio to direct, and of the filter's CPU
per unit of work."""
import statistics
import sys
from collections import defaultdict

rows = defaultdict(dict)  # (target, workload, metric) -> {round: value}
for line in open(sys.argv[1]):
    r, t, w, m, v = line.rstrip("\n").split("\t")
    try:
        rows[(t, w, m)][int(r)] = float(v)
    except ValueError:
        pass


def get(t, w, m):
    return rows.get((t, w, m), {})


def med(t, w, m):
    v = get(t, w, m)
    return statistics.median(v.values()) if v else None


def ratio(t, w, m="rate"):
    a, d = get(t, w, m), get("direct", w, m)
    rs = [a[r] / d[r] for r in a if r in d and d[r]]
    return statistics.median(rs) if rs else None


secs = med("all", "meta", "secs") or 1
bulk = med("all", "meta", "bulk") or 1
# Held-connection counts measured: the workloads named heldN.
helds = sorted({int(w[4:]) for (_, w, _) in rows if w.startswith("held") and w[4:].isdigit()})


def per_unit(t, w, scale, unit, rate_metric="rate"):
    """median over rounds of filter CPU per unit of work"""
    c, n = get(t, w, "cpu_s"), get(t, w, rate_metric)
    vs = [c[r] / (n[r] * secs) * scale for r in c if r in n and n[r]]
    return f"{statistics.median(vs):.0f} {unit}" if vs else None


TARGETS = ["direct", "egret", "haproxy", "haproxy_splice", "socat", "dnsmasq", "dnsmasq_cache"]
HEAD = ["direct", "egret", "HAProxy", "HAProxy splice-req/resp", "socat", "dnsmasq", "dnsmasq cache-hot"]


def fmt(v, digits=0):
    return f"{v:,.{digits}f}" if v is not None else ""


def rate_row(label, w, cpu=None, metric="rate", digits=0):
    cells = []
    for t in TARGETS:
        v = med(t, w, metric)
        if v is None:
            cells.append("")
            continue
        parts = []
        if t != "direct":
            rt = ratio(t, w, metric)
            if rt is not None:
                parts.append(f"{rt:.2f}×")
            if cpu:
                u = cpu(t)
                if u:
                    parts.append(u)
        cells.append(fmt(v, digits) + (f" ({', '.join(parts)})" if parts else ""))
    return [label] + cells


def plain_row(label, w, metric, digits=2, scale=1.0):
    return [label] + [fmt(med(t, w, metric) * scale, digits) if med(t, w, metric) is not None else "" for t in TARGETS]


def bulk_cpu(w):
    def f(t):
        c, n = get(t, w, "cpu_s"), get(t, w, "rate")
        vs = [c[r] / (bulk / 2**30) for r in c]
        return f"{statistics.median(vs):.2f} CPU-s/GiB" if vs else None
    return f


table = [
    rate_row("new HTTPS conn/s, 1 client", "tls_c1", lambda t: per_unit(t, "tls_c1", 1e6, "µs/conn")),
    plain_row("  p50 ms, 1 client", "tls_c1", "p50_ms"),
    plain_row("  p99 ms, 1 client", "tls_c1", "p99_ms"),
    rate_row("new HTTPS conn/s, 16 clients", "tls_c16", lambda t: per_unit(t, "tls_c16", 1e6, "µs/conn")),
    plain_row("  p50 ms, 16 clients", "tls_c16", "p50_ms"),
    plain_row("  p99 ms, 16 clients", "tls_c16", "p99_ms"),
    rate_row("new HTTP conn/s, 16 clients", "http_c16", lambda t: per_unit(t, "http_c16", 1e6, "µs/conn")),
    plain_row("  p99 ms", "http_c16", "p99_ms"),
    rate_row("keep-alive HTTP req/s, 16 conns, Host checked", "keepalive_c16",
             lambda t: per_unit(t, "keepalive_c16", 1e6, "µs/req")),
    plain_row("  p50 ms", "keepalive_c16", "p50_ms"),
    plain_row("  p99 ms", "keepalive_c16", "p99_ms"),
    rate_row("disallowed SNI handled/s, 16 clients", "bad_sni_c16",
             lambda t: per_unit(t, "bad_sni_c16", 1e6, "µs/conn", "errors_per_s"), metric="errors_per_s"),
    plain_row("  disallowed SNI served (sum of medians)", "bad_sni_c16", "served", 0),
    rate_row("disallowed Host answered/s (403), 16 clients", "bad_host_c16",
             lambda t: per_unit(t, "bad_host_c16", 1e6, "µs/conn")),
    plain_row("  disallowed Host served", "bad_host_c16", "served", 0),
    rate_row(f"bulk {bulk / 2**20:.0f} MiB, 1 conn, MB/s", "bulk1", bulk_cpu("bulk1")),
    rate_row(f"bulk {bulk / 2**20:.0f} MiB, 8 conns, MB/s", "bulk8", bulk_cpu("bulk8")),
    plain_row("idle memory MiB (RSS; socat: PSS sum)", "idle", "rss_kib", 1, 1 / 1024),
    plain_row("memory after the run MiB", "after", "rss_kib", 1, 1 / 1024),
]
for held in helds:
    table += [
        plain_row(f"{held} TLS conns held: memory MiB", f"held{held}", "rss_kib", 1, 1 / 1024),
        ["  KiB per held connection"] + [
            fmt((med(t, f"held{held}", "rss_kib") - med(t, "idle", "rss_kib")) / held, 1)
            if med(t, f"held{held}", "rss_kib") is not None and med(t, "idle", "rss_kib") is not None else ""
            for t in TARGETS],
        plain_row("  threads (socat: processes)", f"held{held}", "threads", 0),
        plain_row("  s to open them all (client-bound)", f"held{held}", "open_s"),
        plain_row("  s for one request on each, all active", f"held{held}", "active_s"),
        plain_row("  requests answered 200", f"held{held}", "ok", 0),
    ]
table += [
    rate_row("DNS allowed name, queries/s (forwarded)", "dns_allowed"),
    rate_row("DNS blocked name, queries/s", "dns_blocked"),
]

print("| workload | " + " | ".join(HEAD) + " |")
print("|---" * (len(HEAD) + 1) + "|")
for r in table:
    if any(c for c in r[1:]):
        print("| " + " | ".join(r) + " |")
# COUNTS: perf event counts on the filter CPU per unit of work.
UNITS = [("tls_c1", "rate", "conn"), ("tls_c16", "rate", "conn"), ("http_c16", "rate", "conn"),
         ("keepalive_c16", "rate", "req"), ("bad_sni_c16", "errors_per_s", "conn"),
         ("bad_host_c16", "rate", "conn")]
events = sorted({m[2:] for (_, _, m) in rows if m.startswith("n:")})
if events:
    print("\nPerf event counts on the filter CPU per unit of work (medians over rounds):\n")
    print("| workload | event | " + " | ".join(HEAD) + " |")
    print("|---" * (len(HEAD) + 2) + "|")
    for w, metric, unit in UNITS + [("bulk1", None, "MiB"), ("bulk8", None, "MiB")]:
        for ev in events:
            cells = []
            for t in TARGETS:
                c, n = get(t, w, "n:" + ev), get(t, w, metric) if metric else None
                if metric:
                    vs = [c[r] / (n[r] * secs) for r in c if r in n and n[r]]
                else:
                    vs = [c[r] / (bulk / 2**20) for r in c]
                cells.append(f"{statistics.median(vs):.1f}" if vs else "")
            if any(cells):
                print(f"| {w} (per {unit}) | {ev} | " + " | ".join(cells) + " |")
loads = sorted(get("all", "load", "load1").values())
end = med("all", "load", "load1_end")
print(f"\nload average (1 min) at round starts: {', '.join(f'{l:.2f}' for l in loads)}; at the end: {fmt(end, 2)}")
