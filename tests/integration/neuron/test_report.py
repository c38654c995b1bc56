# tests/integration/neuron/test_report.py — the neuron's reporting into a real PostgreSQL:
# registration, node_models, heartbeats on the database clock, placement transitions and
# progress, a refused load failing its placement, and a PostgreSQL restart while a request
# streams.
#
# Each run starts its own throwaway PostgreSQL 15 (ops/lib/pg.sh) so it can restart it without
# disturbing other tests, migrates it with ops/migrate, and talks to it with psql.
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import MODEL, Neuron

SRC = os.environ.get("CORTEX_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../../.."))
BUDGET = 8 * 1024 ** 3


def have_postgres():
    return (os.path.exists("/usr/lib/postgresql/15/bin/pg_ctl") or shutil.which("pg_ctl")) and \
        shutil.which("psql")


class Postgres:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cortex-neuron-pg.")
        self.port = None
        self.start()
        subprocess.run([os.path.join(SRC, "ops/migrate"), self.conninfo], check=True,
                       stdout=subprocess.DEVNULL)

    def start(self):
        out = subprocess.run(
            ["bash", "-c", 'source "$0/ops/lib/pg.sh" && pg_start "$1" $2 >&2 && echo "$CORTEX_PG"',
             SRC, self.dir, str(self.port or "")],
            check=True, capture_output=True, text=True).stdout.strip()
        self.conninfo = out.splitlines()[-1]
        self.port = int(re.search(r"port=(\d+)", self.conninfo).group(1))

    def stop(self):
        subprocess.run(["bash", "-c", 'source "$0/ops/lib/pg.sh" && pg_stop "$1"', SRC, self.dir],
                       check=True)

    def sql(self, query):
        return subprocess.run(["psql", self.conninfo, "-v", "ON_ERROR_STOP=1", "-Atqc", query],
                              check=True, capture_output=True, text=True).stdout.strip()

    def wait_for(self, query, want=lambda v: v not in ("", None), timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            value = self.sql(query)
            if want(value):
                return value
            assert time.monotonic() < deadline, "timed out waiting for %r (last %r)" % (query,
                                                                                       value)
            time.sleep(0.1)


@pytest.fixture(scope="module")
def pg():
    if not have_postgres():
        pytest.skip("PostgreSQL 15 binaries not installed")
    p = Postgres()
    yield p
    p.stop()
    shutil.rmtree(p.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def db_neuron(pg):
    n = Neuron(["--db", pg.conninfo, "--heartbeat", "200ms", "--name", "db-node",
                "--memory-budget", str(BUDGET), "--advertise", "http://127.0.0.1:1"])
    yield n
    rc = n.stop()
    assert rc == 0, "neuron exited with %d:\n%s" % (rc, n.log_text()[-20000:])


def test_registration_models_and_heartbeats(pg, db_neuron):
    node = pg.wait_for("SELECT id FROM cortex.nodes WHERE name = 'db-node'")
    assert pg.sql("SELECT endpoint FROM cortex.nodes WHERE id = %s" % node) == "http://127.0.0.1:1"
    assert pg.sql("SELECT kind || ':' || ordinal || ':' || memory_total_bytes FROM cortex.gpus "
                  "WHERE node_id = %s" % node) == "cpu:0:%d" % BUDGET
    row = pg.wait_for("SELECT format || ':' || architecture || ':' || (memory_bytes > size_bytes) "
                      "FROM cortex.node_models WHERE node_id = %s AND name = '%s'" % (node, MODEL))
    assert row == "gguf:llama:true"
    first = pg.sql("SELECT last_heartbeat_at FROM cortex.nodes WHERE id = %s" % node)
    pg.wait_for("SELECT last_heartbeat_at > '%s' FROM cortex.nodes WHERE id = %s" % (first, node),
                want=lambda v: v == "t")
    assert pg.sql("SELECT memory_free_bytes FROM cortex.gpus WHERE node_id = %s" % node) == \
        str(BUDGET)


def make_placement(pg, node):
    epoch = pg.sql("SELECT cortex.lease_acquire('neuron-test')")
    model = pg.wait_for("SELECT id FROM cortex.models WHERE name = '%s'" % MODEL)
    gpu = pg.sql("SELECT id FROM cortex.gpus WHERE node_id = %s" % node)
    return int(pg.sql("SELECT cortex.placement_create(%s, %s, %s, ARRAY[%s]::bigint[])" %
                      (epoch, model, node, gpu)))


def test_refused_load_fails_its_placement(pg, db_neuron):
    node = pg.wait_for("SELECT id FROM cortex.nodes WHERE name = 'db-node'")
    pid = make_placement(pg, node)
    status, doc = db_neuron.json("POST", "/models/load",
                                 {"model": "no-such-model", "placement_id": pid})
    assert status == 404 and doc["error"]["code"] == "model_not_found"
    pg.wait_for("SELECT state FROM cortex.placements WHERE id = %d" % pid,
                want=lambda v: v == "failed")
    reason = pg.sql("SELECT reason FROM cortex.placements WHERE id = %d" % pid)
    assert reason == "load refused by the neuron: " + doc["error"]["message"]


def test_placement_lifecycle_and_restart_while_streaming(pg, db_neuron):
    node = pg.wait_for("SELECT id FROM cortex.nodes WHERE name = 'db-node'")
    incarnation = pg.sql("SELECT incarnation FROM cortex.nodes WHERE id = %s" % node)
    pid = make_placement(pg, node)
    status, doc = db_neuron.json("POST", "/models/load", {"model": MODEL, "placement_id": pid})
    assert status == 202, doc
    pg.wait_for("SELECT state FROM cortex.placements WHERE id = %d" % pid,
                want=lambda v: v == "ready")
    done, total = pg.sql("SELECT progress_bytes || ' ' || progress_total_bytes FROM "
                         "cortex.placements WHERE id = %d" % pid).split()
    assert int(done) == int(total) == db_neuron.loaded()["progress"]["bytes_total"]
    assert db_neuron.loaded()["placement_id"] == pid

    # PostgreSQL goes away and comes back while a request streams: the request is unaffected,
    # heartbeats resume, and the node keeps its incarnation and its ready placement.
    client = db_neuron.client()
    result = {}

    def stream():
        s = client.completions.create(model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=30,
                                      temperature=0, stream=True)
        chunks = list(s)
        result["finish"] = [c.choices[0].finish_reason for c in chunks if c.choices][-1]

    t = threading.Thread(target=stream)
    t.start()
    pg.stop()
    deadline = time.monotonic() + 30
    while "database" not in db_neuron.log_text().split("placement %d -> ready" % pid)[-1]:
        assert time.monotonic() < deadline, "the neuron never noticed the database going away"
        time.sleep(0.1)
    pg.start()
    restarted = pg.sql("SELECT now()")
    pg.wait_for("SELECT last_heartbeat_at > '%s' FROM cortex.nodes WHERE id = %s" %
                (restarted, node), want=lambda v: v == "t")
    t.join(timeout=600)
    assert result.get("finish") == "length"
    assert pg.sql("SELECT incarnation FROM cortex.nodes WHERE id = %s" % node) == incarnation
    assert pg.sql("SELECT state FROM cortex.placements WHERE id = %d" % pid) == "ready"
    assert int(pg.sql("SELECT memory_used_bytes FROM cortex.gpus WHERE node_id = %s" % node)) == \
        db_neuron.loaded()["memory_bytes"]

    status, _ = db_neuron.json("POST", "/models/unload", {"model": MODEL})
    assert status == 202
    pg.wait_for("SELECT state FROM cortex.placements WHERE id = %d" % pid,
                want=lambda v: v == "gone")
    pg.wait_for("SELECT memory_used_bytes FROM cortex.gpus WHERE node_id = %s" % node,
                want=lambda v: v == "0")
