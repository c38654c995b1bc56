# tests/integration/scheduler/test_moves.py — placements that move or stay against the usual
# rules: defragmentation, drain_node (and `cortex drain`), min_replicas against the idle TTL,
# and the scheduler's timing taken from the settings from its first lease on.
import json
import re

import fleet as F


def demand(f, model):
    f.db.rows("SELECT cortex.demand_load('%s', 'test')" % model)


def load_on(f, model, node):
    """Asks for model on node (cortex.request_load) and waits until it is ready there."""
    f.db.rows("SELECT cortex.request_load('%s', '%s')" % (model, node))
    F.wait_for(lambda: (model, node) in [(p[1], p[2]) for p in f.placements(model, ("ready",))],
               30, "%s ready on %s" % (model, node), f.any_sched())


def events(f, kind, model=None):
    """[(event id, model, node, cause, reason)] of one event kind, oldest first."""
    where = " AND model = '%s'" % model if model else ""
    return [tuple(r) for r in f.db.rows(
        "SELECT id, model, coalesce(node, ''), coalesce(detail->>'cause', ''), coalesce(reason, '')"
        " FROM cortex.events WHERE kind = '%s'%s ORDER BY id" % (kind, where))]


def test_defragmentation_moves_a_replica_to_make_room(fleet):
    n1, n2 = fleet.neuron("n1"), fleet.neuron("n2")
    # defragmentation off until m3 has waited: a cycle that happened to be a defragmenting one
    # would otherwise move a replica at m3's first sight, before any wait
    fleet.db.rows("SELECT cortex.set_setting('defrag_after_cycles', '0')")
    fleet.scheduler()
    # m1 and m2 (461056 bytes each) pinned on different nodes: each node keeps 538944 free
    load_on(fleet, "m1", "n1")
    load_on(fleet, "m2", "n2")
    fleet.db.rows("SELECT cortex.pin_model('m1'); SELECT cortex.pin_model('m2')")
    # m3 needs 700000 by the catalogue: it fits no node as placed, and nothing may be evicted
    fleet.db.rows("UPDATE cortex.models SET memory_bytes = 700000 WHERE name = 'm3'")
    demand(fleet, "m3")
    F.wait_for(lambda: events(fleet, "scheduler.wait", "m3"), 30, "m3 waiting", fleet.any_sched())
    fleet.db.rows("SELECT cortex.set_setting('defrag_after_cycles', '8')")
    node = fleet.wait_ready("m3", 60)
    waits = events(fleet, "scheduler.wait", "m3")
    defrag = [e for e in events(fleet, "scheduler.load") if e[3] == "defrag"]
    assert waits and defrag, (waits, defrag)
    assert waits[0][0] < defrag[0][0], "m3 waited before the defragmentation"
    assert len(defrag) == 1, defrag
    moved, target = defrag[0][1], defrag[0][2]
    assert moved in ("m1", "m2") and target != node
    # the replica left the node m3 now has to itself, make before break, and nothing was evicted
    F.wait_for(lambda: [p[2] for p in fleet.placements(moved, ("ready", "unloading"))] == [target],
               30, "the old replica of %s gone" % moved, fleet.any_sched())
    assert fleet.ready("m1") == fleet.ready("m2") == target
    assert [e[3] for e in events(fleet, "scheduler.unload")] == ["moved"]
    assert fleet.neurons[node].loaded() == {"m3": "ready"}
    assert fleet.neurons[target].loaded() == {"m1": "ready", "m2": "ready"}
    assert fleet.db.value("SELECT r.replaces_id = o.id FROM cortex.placements r"
                          " JOIN cortex.placements o ON o.id = r.replaces_id"
                          " JOIN cortex.models m ON m.id = r.model_id"
                          " WHERE m.name = '%s'" % moved) == "t"
    assert n1.alive() and n2.alive()


def test_drain_moves_models_away_and_places_nothing_there(fleet):
    fleet.neuron("n1", models=["m1", "m2"])
    fleet.neuron("n2", models=["m1"])  # m2's files are on n1 only
    fleet.scheduler()
    load_on(fleet, "m1", "n1")
    old = fleet.placements("m1", ("ready",))[0][0]
    fleet.db.rows("UPDATE cortex.placements SET last_used_at = now() WHERE id = %s" % old)
    rc, out, err = F.cortex(fleet.conninfo, "drain", "n1")
    assert (rc, out.strip()) == (0, "draining"), err
    assert fleet.db.value("SELECT draining FROM cortex.nodes WHERE name = 'n1'") == "t"
    rc, out, err = F.cortex(fleet.conninfo, "status")
    assert rc == 0 and re.search(r"^  n1 +alive, draining  ", out, re.M), out + err
    rc, out, err = F.cortex(fleet.conninfo, "--json", "status")
    assert {n["node"]: n["draining"] for n in json.loads(out)["nodes"]} == {"n1": True,
                                                                          "n2": False}
    # in use: moved make before break (a replacement on n2 first), then the old one unloads
    F.wait_for(lambda: [p[2] for p in fleet.placements("m1", ("requested", "loading", "ready",
                                                              "unloading"))] == ["n2"],
               30, "m1 moved to n2", fleet.any_sched())
    assert fleet.ready("m1") == "n2"
    assert fleet.db.value("SELECT replaces_id FROM cortex.placements WHERE state = 'ready'") == \
        str(old)
    assert fleet.neurons["n1"].loaded() == {}
    assert ("drain" in [e[3] for e in events(fleet, "scheduler.load", "m1")])
    # nothing new goes to the draining node, even when no other node can take the model
    demand(fleet, "m2")
    F.wait_for(lambda: events(fleet, "scheduler.wait", "m2"), 15, "m2 waiting", fleet.any_sched())
    assert "n1" in events(fleet, "scheduler.wait", "m2")[-1][4] or \
        "draining" in events(fleet, "scheduler.wait", "m2")[-1][4]
    assert fleet.placements("m2", ("requested", "loading", "ready", "failed")) == []
    rc, out, err = F.cortex(fleet.conninfo, "undrain", "n1")
    assert (rc, out.strip()) == (0, "no longer draining"), err
    assert fleet.wait_ready("m2") == "n1"


def test_min_replicas_stay_loaded_despite_idle_ttl(fleet):
    fleet.neuron("n1")
    fleet.neuron("n2")
    fleet.neuron("n3")
    fleet.scheduler()
    fleet.db.rows("SELECT cortex.set_replicas('m1', 2)")
    for m in ("m1", "m2"):
        fleet.db.rows("SELECT cortex.set_idle_ttl('%s', '1 second')" % m)
    F.wait_for(lambda: len(fleet.placements("m1", ("ready",))) == 2, 30, "two replicas of m1",
               fleet.any_sched())
    nodes = sorted(p[2] for p in fleet.placements("m1", ("ready",)))
    assert len(set(nodes)) == 2, nodes
    demand(fleet, "m2")
    fleet.wait_ready("m2")
    # everything idle for an hour: m2 (no minimum) goes, m1 keeps its two replicas
    fleet.db.rows("UPDATE cortex.placements SET last_used_at = now() - interval '1 hour'"
                  " WHERE state = 'ready'")
    F.wait_for(lambda: fleet.placements("m2", ("requested", "loading", "ready", "unloading"))
               == [], 30, "m2 unloaded after its idle TTL", fleet.any_sched())
    assert sorted(p[2] for p in fleet.placements("m1", ("ready",))) == nodes
    assert events(fleet, "scheduler.unload", "m1") == []
    assert [e[3] for e in events(fleet, "scheduler.unload", "m2")] == ["idle"]
    for n in nodes:
        assert fleet.neurons[n].loaded().get("m1") == "ready"


def test_first_lease_has_the_lease_duration_setting(fleet):
    fleet.db.rows("SELECT cortex.set_setting('lease_duration', '7 seconds')")
    s = fleet.scheduler(timing=False)
    F.wait_for(lambda: fleet.db.value("SELECT epoch FROM cortex.scheduler_lease") == "1", 15,
               "the first lease", s)
    got = fleet.db.value("SELECT extract(epoch FROM (detail->>'expires_at')::timestamptz - at)"
                         " FROM cortex.events WHERE kind = 'lease.acquired' AND epoch = 1")
    assert abs(float(got) - 7.0) < 0.5, got
