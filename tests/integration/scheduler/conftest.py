# tests/integration/scheduler/conftest.py — one throwaway PostgreSQL for the session (ops/lib/pg.sh,
# migrated once into a template database) and, per test, a fresh database cloned from it plus a
# `fleet` fixture that starts real neurons and schedulers against it and stops them afterwards.
#
# Fast settings make the fleet react in seconds: heartbeat 1 s (grace 2 s), scheduler tick
# 300 ms, lease 3 s. Every neuron serves the same tiny llama fixture under several names
# ("m1".."m7", 461056 bytes each as estimated by the neuron) with a 1,000,000-byte budget, so a
# node holds two models and three nodes fill up with six.
import os
import shutil
import subprocess
import tempfile

import pytest

import fleet as F

BUDGET = 1000000
MODELS = ["m%d" % i for i in range(1, 8)]
SETTINGS = {"heartbeat_interval": "1 second", "heartbeat_grace": "2 seconds",
            "scheduler_tick": "300 milliseconds", "lease_duration": "3 seconds"}


@pytest.fixture(scope="session")
def pg():
    d = tempfile.mkdtemp(prefix="cortex-sched-it.")
    os.chmod(d, 0o755)
    script = ('set -e; source "%s/ops/lib/pg.sh"; pg_start "%s/pg" >&2; '
              '"%s/ops/migrate" "$CORTEX_PG" >&2; echo "$PGHOST"; echo "$PGPORT"'
              % (F.SOURCE, d, F.SOURCE))
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        raise RuntimeError("could not start PostgreSQL:\n" + r.stderr)
    host, port = r.stdout.split()[:2]
    base = "host=%s port=%s user=postgres" % (host, port)
    admin = F.Db(base + " dbname=postgres")
    admin.rows("ALTER DATABASE cortex WITH IS_TEMPLATE true")
    try:
        yield {"base": base, "admin": admin, "dir": d}
    finally:
        subprocess.run(["bash", "-c", 'source "%s/ops/lib/pg.sh"; pg_stop "%s/pg"' % (F.SOURCE, d)],
                       timeout=120)
        shutil.rmtree(d, ignore_errors=True)


class Fleet:
    def __init__(self, pg, name):
        self.dir = tempfile.mkdtemp(prefix="cortex-fleet.")
        pg["admin"].rows('CREATE DATABASE "%s" TEMPLATE cortex' % name)
        self.conninfo = "%s dbname=%s" % (pg["base"], name)
        self.db = F.Db(self.conninfo)
        for k, v in SETTINGS.items():
            self.db.rows("SELECT cortex.set_setting('%s', '%s')" % (k, v))
        self.neurons = {}
        self.schedulers = {}
        self.gateways = {}
        self.failed = []

    def neuron(self, name, models=MODELS, budget=BUDGET, heartbeat="1s", advertise=None, ctx=64):
        """models: names (the llama fixture) or (name, fixture or GGUF path) pairs."""
        models = [m if isinstance(m, tuple) else (m, "llama") for m in models]
        n = F.Neuron(self.dir, name, self.conninfo, budget, models, heartbeat, advertise, ctx)
        self.neurons[name] = n
        # registered and its disk scan synced into the catalogue
        F.wait_for(lambda: self.db.value(
            "SELECT count(*) FROM cortex.node_models nm JOIN cortex.nodes n ON n.id = nm.node_id"
            " WHERE n.name = '%s'" % name) == str(len(models)), 30, "%s synced" % name, n)
        return n

    def scheduler(self, name="s1", extra=(), timing=True):
        s = F.Scheduler(self.dir, name, self.conninfo, extra, timing)
        self.schedulers[name] = s
        return s

    def gateway(self):
        binary = os.environ.get("CORTEX_GATEWAY_BIN")
        if not binary or not os.path.exists(binary):
            pytest.skip("CORTEX_GATEWAY_BIN not set")
        g = F.Gateway(self.dir, self.conninfo, binary)
        self.gateways["gateway"] = g
        return g

    def placements(self, model=None, states=("requested", "loading", "ready")):
        """[(placement id, model, node, state)] of live placements, oldest first."""
        where = "p.state IN (%s)" % ",".join("'%s'" % s for s in states)
        if model:
            where += " AND m.name = '%s'" % model
        return [tuple(r) for r in self.db.rows(
            "SELECT p.id, m.name, n.name, p.state FROM cortex.placements p"
            " JOIN cortex.models m ON m.id = p.model_id JOIN cortex.nodes n ON n.id = p.node_id"
            " WHERE %s ORDER BY p.id" % where)]

    def ready(self, model):
        """The node name where model is ready (None when it is nowhere ready)."""
        rows = self.placements(model, ("ready",))
        return rows[0][2] if rows else None

    def wait_ready(self, model, timeout=30):
        try:
            return F.wait_for(lambda: self.ready(model), timeout, "%s ready" % model,
                              self.any_sched())
        except AssertionError as e:
            raise AssertionError("%s\nplacements: %r\nevents: %r" % (e, self.placements(
                states=("requested", "loading", "ready", "unloading", "gone", "failed")),
                self.db.rows("SELECT kind, model, node, reason FROM cortex.events"
                             " ORDER BY id DESC LIMIT 20"))) from None

    def any_sched(self):
        return next(iter(self.schedulers.values()), None)

    def stop(self):
        bad = []
        for group in (self.gateways, self.schedulers, self.neurons):
            for name, p in group.items():
                rc = p.stop()
                if rc not in (0, -9) and not getattr(p, "killed", False):
                    bad.append("%s exited %s:\n%s" % (name, rc, p.log_text()[-3000:]))
        if not bad and not os.environ.get("CORTEX_TEST_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        return bad


@pytest.fixture
def fleet(pg, request):
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:50]
    f = Fleet(pg, name)
    try:
        yield f
    finally:
        bad = f.stop()
        assert not bad, "\n".join(bad)
