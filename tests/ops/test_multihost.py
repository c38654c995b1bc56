"""tests/ops/test_multihost.py — libpq multi-host connection strings with
target_session_attrs=read-write, as docs/deploy.md recommends for a primary with a standby.

Three PostgreSQL addresses on 127.0.0.1: a cluster that has been stopped (connection refused),
a hot standby streaming from the primary (read-only: libpq must pass over it), and the primary,
listed in that order. The neuron, the scheduler, a gateway, the cortex CLI and ops/migrate are
each given only that string; each must come up and work against the primary: the neuron
registers, the scheduler leads and loads the model on demand, the gateway answers a chat
request (cold start) and records its row, the CLI shows the fleet. Then the primary stops and
the standby is promoted: without a restart, heartbeats, the scheduler's lease and the gateway's
request rows all continue on the new primary.
"""
import os
import subprocess

import pytest

import stack as S


@pytest.fixture(scope="module")
def dbs():
    S.require("postgres", "pg_basebackup", "neuron", "scheduler", "gateway", "model")
    work = S.new_workdir("cortex-ops-multihost.")
    started = []
    try:
        stopped = S.Postgres(work, "pg-stopped", migrate=False)
        stopped.stop()
        primary = S.Postgres(work, "pg-primary")
        started.append(primary)
        primary.settings()
        # a streaming standby of the primary (pg_basebackup -R writes standby.signal)
        sdir = os.path.join(work, "pg-standby")
        os.makedirs(sdir)
        cmd = ["pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
               "-D", os.path.join(sdir, "data"), "-R", "-X", "stream", "-c", "fast"]
        bindir = "/usr/lib/postgresql/15/bin"
        if os.path.exists(os.path.join(bindir, "pg_basebackup")):
            cmd[0] = os.path.join(bindir, "pg_basebackup")
        if os.getuid() == 0:
            subprocess.run(["chown", "postgres:", sdir], check=True)
            cmd = [S.program("runuser"), "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, timeout=120)
        standby = S.Postgres.__new__(S.Postgres)
        standby.dir, standby.port = sdir, S.free_port()
        standby.start()
        standby.conninfo = "host=127.0.0.1 port=%d user=postgres dbname=cortex" % standby.port
        started.append(standby)
        assert standby.sql("SELECT pg_is_in_recovery()") == "t"
        multi = ("host=127.0.0.1,127.0.0.1,127.0.0.1 port=%d,%d,%d user=postgres dbname=cortex "
                 "target_session_attrs=read-write connect_timeout=3"
                 % (stopped.port, standby.port, primary.port))
        yield {"work": work, "primary": primary, "standby": standby, "multi": multi}
    finally:
        for pg in reversed(started):
            pg.stop()
        S.remove_workdir(work)


def test_psql_reaches_the_primary(dbs):
    p = dbs["primary"]
    assert p.sql("SELECT inet_server_port()", dbs["multi"]) == str(p.port)
    assert p.sql("SELECT pg_is_in_recovery()", dbs["multi"]) == "f"
    # without target_session_attrs the same list lands on the standby: the option matters
    any_host = dbs["multi"].replace("target_session_attrs=read-write", "")
    assert p.sql("SELECT inet_server_port()", any_host) == str(dbs["standby"].port)


def test_migrate_through_the_list(dbs):
    out = subprocess.run([os.path.join(S.SRC, "ops/migrate"), dbs["multi"]], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    assert "nothing to apply" in out, out


@pytest.fixture(scope="module")
def fleet(dbs):
    """neuron, scheduler and gateway, each given only the multi-host string."""
    work, multi = dbs["work"], dbs["multi"]
    procs = {}
    try:
        procs["neuron"], _ = S.start_neuron(work, multi, name="mh-node")
        procs["scheduler"], sched_url = S.start_scheduler(work, multi, name="mh-scheduler")
        procs["gateway"], api, _ = S.start_gateway(work, multi, name="mh-gateway")
        yield {"procs": procs, "scheduler": sched_url, "api": api}
    finally:
        rcs = {name: p.stop() for name, p in reversed(list(procs.items()))}
    assert all(rc == 0 for rc in rcs.values()), rcs


def heartbeat(pg):
    return pg.sql("SELECT last_heartbeat_at FROM cortex.nodes WHERE name = 'mh-node'")


def test_every_process_comes_up_on_the_primary(dbs, fleet):
    multi, primary = dbs["multi"], dbs["primary"]
    neuron, sched, gw = (fleet["procs"][n] for n in ("neuron", "scheduler", "gateway"))
    S.wait_for(lambda: primary.sql("SELECT count(*) FROM cortex.nodes WHERE name = 'mh-node'")
               == "1", 60, "the neuron registered on the primary", neuron)
    S.wait_for(lambda: primary.sql("SELECT count(*) FROM cortex.models WHERE name = '%s'"
                                   % S.MODEL) == "1", 60, "its model in the catalogue", neuron)
    S.wait_for(lambda: leads(fleet["scheduler"]), 30, "the scheduler leads", sched)
    S.wait_for(lambda: S.MODEL in S.http("GET", fleet["api"] + "/v1/models", timeout=5)[1], 30,
               "the gateway's catalogue from the database", gw)
    ok, detail = S.chat(fleet["api"], max_tokens=4, timeout=120)
    assert ok, detail + "\n" + gw.tail() + "\n" + sched.tail()
    S.wait_for(lambda: int(primary.sql("SELECT count(*) FROM cortex.requests")) >= 1, 30,
               "the gateway's request row on the primary", gw)
    # heartbeats keep flowing (the neuron's connection is the primary's, not the standby's)
    hb = heartbeat(primary)
    S.wait_for(lambda: heartbeat(primary) != hb, 10, "a later heartbeat", neuron)
    cli = os.environ.get("CORTEX_CLI_BIN")
    if cli and os.access(cli, os.X_OK):
        r = subprocess.run([cli, "--db", multi, "status"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0 and "mh-node" in r.stdout, r.stdout + r.stderr


def leads(sched_url):
    status, text = S.http("GET", sched_url + "/metrics", timeout=5)
    return status == 200 and S.metric_value(text, "cortex_scheduler_leader") == 1


def test_failover_to_the_promoted_standby(dbs, fleet):
    """The primary goes away and the standby is promoted (docs/deploy.md, Failover): with the
    same strings and no restart, every process finds the new primary."""
    primary, standby = dbs["primary"], dbs["standby"]
    neuron, sched, gw = (fleet["procs"][n] for n in ("neuron", "scheduler", "gateway"))
    rows_before = int(primary.sql("SELECT count(*) FROM cortex.requests"))
    S.wait_for(lambda: int(standby.sql("SELECT count(*) FROM cortex.requests")) == rows_before,
               30, "the standby caught up")
    primary.stop()
    assert standby.sql("SELECT pg_promote()") == "t"
    assert standby.sql("SELECT pg_is_in_recovery()") == "f"
    hb = heartbeat(standby)
    lease = standby.sql("SELECT renewed_at FROM cortex.scheduler_lease")
    S.wait_for(lambda: heartbeat(standby) != hb, 60, "heartbeats on the new primary", neuron)
    # renewed (or taken again) on the new primary, not just the replicated row
    S.wait_for(lambda: standby.sql("SELECT holder || ' ' || (renewed_at IS DISTINCT FROM '%s') "
                                   "FROM cortex.scheduler_lease WHERE expires_at > now()" % lease)
               == "mh-scheduler true", 60, "the scheduler's lease on the new primary", sched)
    assert leads(fleet["scheduler"])
    ok, detail = S.chat(fleet["api"], max_tokens=4, timeout=120)
    assert ok, detail + "\n" + gw.tail()
    S.wait_for(lambda: int(standby.sql("SELECT count(*) FROM cortex.requests")) > rows_before,
               60, "the gateway's request row on the new primary", gw)
