"""tests/ops/test_metrics_names.py — the dashboard and the alert rules query metrics that the
processes really export.

Starts PostgreSQL, a neuron (SmolLM2 on CPU), the scheduler and a gateway in --db mode, sends a
chat request (a cold start: demand, placement, load, generation) so that per-model and
per-request series exist, then scrapes the three /metrics endpoints. Every metric name in a
PromQL expression of ops/grafana/cortex.json and ops/prometheus/alerts.yml must be listed in
ops/prometheus/METRICS.md; every name listed there as exported (and every name used) must be in
a live scrape (histogram families match their _bucket/_sum/_count series), with the labels the
table lists. Names and labels the table marks pending are reported, not failed (the gateway's
full metric set is being added; they are reconciled when it lands).
"""
import json
import os
import re

import pytest

import stack as S

DASHBOARD = os.path.join(S.SRC, "ops/grafana/cortex.json")
ALERTS = os.path.join(S.SRC, "ops/prometheus/alerts.yml")
TABLE = os.path.join(S.SRC, "ops/prometheus/METRICS.md")
SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))
    walk(dash["panels"])
    return exprs


def alert_exprs():
    """The expr: values of alerts.yml (plain or folded block scalars), without a YAML library."""
    exprs, cur, indent = [], None, 0
    for line in open(ALERTS).read().splitlines():
        m = re.match(r"^(\s*)(?:- )?expr:\s*(.*)$", line)
        if m:
            if cur is not None:
                exprs.append(" ".join(cur))
            indent = len(m.group(1))
            rest = m.group(2)
            cur = [] if rest in (">-", ">", "|", "|-") else [rest]
            continue
        if cur is not None:
            if line.strip() and len(line) - len(line.lstrip()) > indent:
                cur.append(line.strip())
            elif line.strip():
                exprs.append(" ".join(cur))
                cur = None
    if cur is not None:
        exprs.append(" ".join(cur))
    return exprs


def used_names(exprs):
    names = set()
    for e in exprs:
        names |= set(re.findall(r"\b(cortex_[a-z0-9_]+)\b", e))
    return names


def table():
    """{name: (type, [labels], status)} from METRICS.md."""
    rows = {}
    for line in open(TABLE):
        m = re.match(r"^\|\s*`([a-z0-9_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|\s*(\w+)\s*\|"
                     r"\s*([a-z ]+?)\s*\|$", line.strip())
        if m:
            labels = [x.strip() for x in m.group(3).split(",") if x.strip()]
            rows[m.group(1)] = (m.group(2), labels, m.group(5).strip())
    return rows


def family_of(name, known):
    """The table entry a used series name belongs to (histogram series to their family)."""
    if name in known:
        return name
    for s in SUFFIXES:
        if name.endswith(s) and name[:-len(s)] in known:
            return name[:-len(s)]
    return None


def live_labels(text, name):
    """Label names seen on samples of name (histograms: of name_bucket/_sum/_count)."""
    seen = set()
    for line in text.splitlines():
        m = re.match(r"(%s(?:_bucket|_sum|_count)?)\{([^}]*)\} " % re.escape(name), line)
        if m:
            seen |= set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2)))
            seen.discard("le")
    return seen


def test_dashboard_shape():
    """Importable by Grafana: unique panel ids, a Prometheus data source on every query panel,
    and the four rows the issue asks for."""
    with open(DASHBOARD) as f:
        dash = json.load(f)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ["Fleet", "Models", "Latency", "Traffic and errors"], rows
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["type"] == "prometheus" and p["targets"], p["title"]
            assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
    assert dash["templating"]["list"][0]["type"] == "datasource"


def test_expressions_are_found():
    assert len(dashboard_exprs()) >= 20
    assert len(alert_exprs()) >= 8
    assert "cortex_gateway_accounting_dropped_total" in used_names(alert_exprs())


@pytest.fixture(scope="module")
def scrapes():
    S.require("postgres", "neuron", "scheduler", "gateway", "model")
    work = S.new_workdir("cortex-ops-metrics.")
    procs = []
    pg = S.Postgres(work)
    try:
        pg.settings()
        neuron, neuron_url = S.start_neuron(work, pg.conninfo)
        procs.append(neuron)
        S.wait_for(lambda: pg.sql("SELECT count(*) FROM cortex.models WHERE name = '%s'"
                                  % S.MODEL) == "1", 60, "smollm2 in the catalogue", neuron)
        sched, sched_url = S.start_scheduler(work, pg.conninfo)
        procs.append(sched)
        gw, api, gw_metrics = S.start_gateway(work, pg.conninfo)
        procs.append(gw)
        S.wait_for(lambda: S.http("GET", api + "/health")[0] == 200, 30, "gateway up", gw)
        ok, detail = S.chat(api, max_tokens=4, timeout=120)
        assert ok, detail + "\n" + gw.tail() + "\n" + sched.tail()
        ok, detail = S.chat(api, max_tokens=4, stream=True)
        assert ok, detail
        # let the scheduler refresh its fleet gauges with the loaded placement
        S.wait_for(lambda: S.metric_value(S.http("GET", sched_url + "/metrics")[1],
                                          "cortex_fleet_placements", {"state": "ready"}) == 1,
                   30, "the scheduler's fleet gauges", sched)
        out = {}
        for name, url in (("gateway", gw_metrics), ("scheduler", sched_url),
                          ("neuron", neuron_url)):
            status, text = S.http("GET", url + "/metrics", timeout=10)
            assert status == 200, (name, status, text[:300])
            out[name] = text
        yield out
    finally:
        for p in reversed(procs):
            p.stop()
        pg.stop()
        S.remove_workdir(work)


def test_dashboard_and_alert_names_exist_in_live_scrapes(scrapes):
    rows = table()
    assert len(rows) >= 30, "METRICS.md table not parsed"
    live = {}
    for process, text in scrapes.items():
        for n in S.metric_names(text):
            live.setdefault(n, process)
    used = {"dashboard": used_names(dashboard_exprs()), "alerts": used_names(alert_exprs())}
    problems, pending, notes = [], [], []
    for where, names in used.items():
        for n in sorted(names):
            fam = family_of(n, rows)
            if fam is None:
                problems.append("%s uses %s, which METRICS.md does not list" % (where, n))
                continue
            is_live = n in live or fam in live
            status = rows[fam][2]
            if status == "pending":
                if is_live:
                    notes.append("%s is exported now: mark it exported in METRICS.md" % fam)
                else:
                    pending.append("PENDING %s (%s uses %s): not exported yet" % (fam, where, n))
            elif not is_live:
                problems.append("MISMATCH %s uses %s: no process exports it (METRICS.md says "
                                "%s)" % (where, n, status))
    for fam, (kind, labels, status) in sorted(rows.items()):
        if status == "pending":
            continue
        if fam not in live:
            problems.append("MISMATCH METRICS.md lists %s as %s, but no scrape has it" %
                            (fam, status))
            continue
        text = scrapes[live[fam]]
        seen = live_labels(text, fam)
        missing = [l for l in labels if l not in seen]
        if missing and status == "labels pending":
            pending.append("PENDING labels %s of %s (has: %s)" % (
                ",".join(missing), fam, ",".join(sorted(seen)) or "none"))
        elif missing and seen:
            problems.append("MISMATCH %s lacks labels %s (has: %s)" % (
                fam, ",".join(missing), ",".join(sorted(seen))))
        elif missing:
            notes.append("%s: no samples to check labels %s against" % (fam, ",".join(labels)))
        elif status == "labels pending":
            notes.append("%s has its labels now: mark it exported in METRICS.md" % fam)
    print("\n".join(["", "metric names: %d used by the dashboard, %d by the alerts; %d live" %
                     (len(used["dashboard"]), len(used["alerts"]), len(live))] + pending + notes))
    assert not problems, "\n".join(problems)
