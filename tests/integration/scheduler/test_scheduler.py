# tests/integration/scheduler/test_scheduler.py — the scheduler's behaviour end to end: real
# cortex-scheduler processes steering real neurons through PostgreSQL (see README.md).
import signal
import time

import fleet as F


def demand(f, model):
    f.db.rows("SELECT cortex.demand_load('%s', 'test')" % model)


def three_nodes(f, **kw):
    return [f.neuron("n%d" % i, **kw) for i in (1, 2, 3)]


def test_demand_loads_on_a_node_that_fits(fleet):
    nodes = three_nodes(fleet)
    fleet.scheduler()
    demand(fleet, "m1")
    node = fleet.wait_ready("m1")
    # the neuron itself serves it, and only that node has it
    assert fleet.neurons[node].loaded() == {"m1": "ready"}
    assert all(n.loaded() == {} for n in nodes if n.name != node)
    F.wait_for(lambda: fleet.db.value("SELECT state FROM cortex.demand d JOIN cortex.models m"
                                      " ON m.id = d.model_id WHERE m.name = 'm1'") == "satisfied",
               10, "the demand resolved", fleet.any_sched())
    assert len(fleet.placements("m1")) == 1


def fill(f, models):
    """Demands each model and waits until all are ready; returns {model: node}."""
    for m in models:
        demand(f, m)
    return {m: f.wait_ready(m, 60) for m in models}


def set_last_used(f, order):
    """Makes the ready placements of order's models used oldest-first, as a gateway's
    placements_touch would have left them."""
    for i, m in enumerate(order):
        f.db.rows("UPDATE cortex.placements p SET last_used_at = now() - interval '%d minutes'"
                  " FROM cortex.models mo WHERE mo.id = p.model_id AND mo.name = '%s'"
                  " AND p.state = 'ready'" % (len(order) - i, m))


def test_lru_evicts_least_recently_used_but_never_pinned(fleet):
    three_nodes(fleet)
    fleet.scheduler()
    fleet.db.rows("SELECT cortex.pin_model('m1')")
    where = fill(fleet, ["m1", "m2", "m3", "m4", "m5", "m6"])
    assert len(set(where.values())) == 3
    set_last_used(fleet, ["m1", "m2", "m3", "m4", "m5", "m6"])  # m1 oldest, but pinned
    demand(fleet, "m7")
    node = fleet.wait_ready("m7", 60)
    assert fleet.placements("m2") == [], "m2 (least recently used, unpinned) must be evicted"
    assert node == where["m2"]
    for m in ("m1", "m3", "m4", "m5", "m6"):
        assert fleet.ready(m) == where[m], m
    assert "m2" not in fleet.neurons[node].loaded()
    ev = fleet.db.rows("SELECT model, detail->>'cause' FROM cortex.events"
                       " WHERE kind = 'scheduler.unload'")
    assert ev == [["m2", "evict"]]


def test_priority_evicts_lowest_priority_first(fleet):
    three_nodes(fleet)
    fleet.scheduler()
    fleet.db.rows("SELECT cortex.set_setting('eviction_strategy', 'priority')")
    for m, p in (("m1", 5), ("m2", 5), ("m3", 5), ("m4", 1), ("m5", 5), ("m6", 5), ("m7", 5)):
        fleet.db.rows("SELECT cortex.set_priority('%s', %d)" % (m, p))
    where = fill(fleet, ["m1", "m2", "m3", "m4", "m5", "m6"])
    set_last_used(fleet, ["m1", "m2", "m3", "m5", "m6", "m4"])  # m4 used most recently
    demand(fleet, "m7")
    node = fleet.wait_ready("m7", 60)
    assert fleet.placements("m4") == [], "m4 (lowest priority) must be evicted"
    assert node == where["m4"]
    for m in ("m1", "m2", "m3", "m5", "m6"):
        assert fleet.ready(m) == where[m], m


def test_idle_ttl_unloads(fleet):
    three_nodes(fleet)
    fleet.scheduler()
    fleet.db.rows("SELECT cortex.set_idle_ttl('m1', '2 seconds')")
    where = fill(fleet, ["m1", "m2"])
    F.wait_for(lambda: fleet.placements("m1", ("requested", "loading", "ready", "unloading"))
               == [], 30, "m1 unloaded after its idle TTL", fleet.any_sched())
    assert "m1" not in fleet.neurons[where["m1"]].loaded()
    assert fleet.ready("m2") == where["m2"]  # default TTL: 30 minutes
    assert fleet.db.value("SELECT detail->>'cause' FROM cortex.events"
                          " WHERE kind = 'scheduler.unload'") == "idle"
