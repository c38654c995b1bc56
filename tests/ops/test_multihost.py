"""tests/ops/test_multihost.py — libpq multi-host connection strings with
target_session_attrs=read-write, as docs/deploy.md recommends for a primary with a standby.

Three PostgreSQL addresses on 127.0.0.1: a cluster that has been stopped (connection refused),
a hot standby streaming from the primary (read-only: libpq must pass over it), and the primary,
listed in that order. The neuron, the scheduler, a gateway, the cortex CLI and ops/migrate are
each given only that string; each must come up and work against the primary: the neuron
registers, the scheduler leads and loads the model on demand, the gateway answers a chat
request (cold start) and records its row, the CLI shows the fleet.
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


def test_every_process_comes_up_on_the_primary(dbs):
    work, multi, primary = dbs["work"], dbs["multi"], dbs["primary"]
    procs = []
    try:
        neuron, _ = S.start_neuron(work, multi, name="mh-node")
        procs.append(neuron)
        S.wait_for(lambda: primary.sql("SELECT count(*) FROM cortex.nodes WHERE name = 'mh-node'")
                   == "1", 60, "the neuron registered on the primary", neuron)
        S.wait_for(lambda: primary.sql("SELECT count(*) FROM cortex.models WHERE name = '%s'"
                                       % S.MODEL) == "1", 60, "its model in the catalogue", neuron)
        sched, sched_url = S.start_scheduler(work, multi, name="mh-scheduler")
        procs.append(sched)

        def leads():
            status, text = S.http("GET", sched_url + "/metrics", timeout=5)
            return status == 200 and S.metric_value(text, "cortex_scheduler_leader") == 1
        S.wait_for(leads, 30, "the scheduler leads", sched)
        gw, api, metrics = S.start_gateway(work, multi, name="mh-gateway")
        procs.append(gw)
        S.wait_for(lambda: S.MODEL in S.http("GET", api + "/v1/models", timeout=5)[1], 30,
                   "the gateway's catalogue from the database", gw)
        ok, detail = S.chat(api, max_tokens=4, timeout=120)
        assert ok, detail + "\n" + gw.tail() + "\n" + sched.tail()
        S.wait_for(lambda: int(primary.sql("SELECT count(*) FROM cortex.requests")) >= 1, 30,
                   "the gateway's request row on the primary", gw)
        # heartbeats keep flowing (the neuron's connection is the primary's, not the standby's)
        hb = primary.sql("SELECT last_heartbeat_at FROM cortex.nodes WHERE name = 'mh-node'")
        S.wait_for(lambda: primary.sql("SELECT last_heartbeat_at FROM cortex.nodes "
                                       "WHERE name = 'mh-node'") != hb, 10, "a later heartbeat",
                   neuron)
        cli = os.environ.get("CORTEX_CLI_BIN")
        if cli and os.access(cli, os.X_OK):
            r = subprocess.run([cli, "--db", multi, "status"], capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 0 and "mh-node" in r.stdout, r.stdout + r.stderr
    finally:
        rcs = {p.name: p.stop() for p in reversed(procs)}
    assert all(rc == 0 for rc in rcs.values()), rcs
