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


def test_killed_neuron_is_marked_down_and_its_models_replaced(fleet):
    three_nodes(fleet)
    fleet.scheduler()
    where = fill(fleet, ["m1"])
    victim = fleet.neurons[where["m1"]]
    set_last_used(fleet, ["m1"])  # used within its idle TTL: worth serving again
    victim.killed = True
    victim.signal(signal.SIGKILL)
    F.wait_for(lambda: fleet.db.value("SELECT marked_down_at IS NOT NULL FROM cortex.nodes"
                                      " WHERE name = '%s'" % victim.name) == "t",
               15, "the node marked down", fleet.any_sched())
    # within 3 heartbeat intervals (1 s) of its last heartbeat, by the database clock
    late = float(fleet.db.value("SELECT extract(epoch FROM marked_down_at - last_heartbeat_at)"
                                " FROM cortex.nodes WHERE name = '%s'" % victim.name))
    assert late <= 3.0, late
    node = fleet.wait_ready("m1", 30)
    assert node != victim.name
    assert fleet.neurons[node].loaded() == {"m1": "ready"}
    assert fleet.db.value("SELECT count(*) FROM cortex.demand d JOIN cortex.models m"
                          " ON m.id = d.model_id WHERE m.name = 'm1'"
                          " AND d.source = 'scheduler:failover'") == "1"


def lease(f):
    """(holder, epoch) of the scheduler lease."""
    r = f.db.rows("SELECT holder, epoch FROM cortex.scheduler_lease")
    return tuple(r[0]) if r else (None, None)


def scheduler_writes(f, epoch, after="-infinity"):
    """Rows written under epoch (events, placements, demand resolutions) after a time."""
    return int(f.db.value(
        "SELECT (SELECT count(*) FROM cortex.events WHERE epoch = %s AND at > '%s')"
        " + (SELECT count(*) FROM cortex.placements WHERE epoch = %s AND created_at > '%s')"
        " + (SELECT count(*) FROM cortex.demand WHERE epoch = %s AND resolved_at > '%s')"
        % (epoch, after, epoch, after, epoch, after)))


def test_two_schedulers_one_acts_and_killing_the_leader_hands_over(fleet):
    three_nodes(fleet)
    s1 = fleet.scheduler("s1")
    F.wait_for(lambda: lease(fleet)[0] == "s1", 15, "s1 leading", s1)
    s2 = fleet.scheduler("s2")
    F.wait_for(lambda: "started" in s2.log_text(), 15, "s2 started", s2)
    fill(fleet, ["m1", "m2"])
    actors = fleet.db.rows("SELECT DISTINCT actor FROM cortex.events WHERE kind LIKE 'scheduler.%'")
    assert actors == [["s1"]]
    assert lease(fleet)[0] == "s1"
    s1.killed = True
    s1.signal(signal.SIGKILL)
    killed = time.monotonic()
    F.wait_for(lambda: lease(fleet)[0] == "s2", 10, "s2 taking over", s2)
    assert time.monotonic() - killed <= 3.0 + 1.0  # one lease (3 s) plus a tick of slack
    demand(fleet, "m3")
    fleet.wait_ready("m3")
    assert fleet.db.value("SELECT actor FROM cortex.events WHERE kind = 'scheduler.load'"
                          " AND model = 'm3'") == "s2"


def test_stopped_leader_resumed_after_its_lease_makes_no_write(fleet):
    three_nodes(fleet)
    s1 = fleet.scheduler("s1")
    F.wait_for(lambda: lease(fleet)[0] == "s1", 15, "s1 leading", s1)
    old_epoch = lease(fleet)[1]
    s2 = fleet.scheduler("s2")
    fill(fleet, ["m1"])
    s1.signal(signal.SIGSTOP)
    F.wait_for(lambda: lease(fleet)[0] == "s2", 15, "s2 taking over", s2)
    taken = fleet.db.value("SELECT acquired_at FROM cortex.scheduler_lease")
    # work for both: s1 has a stale picture of it when it wakes up
    demand(fleet, "m2")
    fleet.db.rows("SELECT cortex.request_unload('m1')")
    s1.signal(signal.SIGCONT)
    fleet.wait_ready("m2")
    F.wait_for(lambda: fleet.placements("m1") == [], 15, "m1 unloaded", s2)
    # s1 runs again for a while (several of its ticks) and must not write anything
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert s1.alive()
        time.sleep(0.2)
    assert scheduler_writes(fleet, old_epoch, taken) == 0
    assert lease(fleet)[0] == "s2"
    # and every live placement has exactly one load event
    dup = fleet.db.rows("SELECT placement_id FROM cortex.events WHERE kind = 'scheduler.load'"
                        " GROUP BY placement_id HAVING count(*) > 1")
    assert dup == []


def test_refused_loads_retry_then_fail_with_reason(fleet):
    three_nodes(fleet)
    fleet.scheduler()
    # the catalogue says it is small, but every neuron's budget is too small: 409 each time
    fleet.db.rows("UPDATE cortex.models SET memory_bytes = 1000 WHERE name = 'm1'")
    fleet.db.rows("UPDATE cortex.node_models SET memory_bytes = 1000 WHERE name = 'm1'")
    fleet.db.rows("SELECT cortex.set_setting('max_load_attempts', '3')")
    # fill every node so that m1 (461056 bytes) does not fit anywhere by the neurons' count
    fill(fleet, ["m2", "m3", "m4", "m5", "m6", "m7"])
    demand(fleet, "m1")
    F.wait_for(lambda: fleet.db.value("SELECT d.state FROM cortex.demand d JOIN cortex.models m"
                                      " ON m.id = d.model_id WHERE m.name = 'm1'") == "failed",
               60, "the demand failed", fleet.any_sched())
    reason = fleet.db.value("SELECT d.reason FROM cortex.demand d JOIN cortex.models m"
                            " ON m.id = d.model_id WHERE m.name = 'm1'")
    assert reason, "a failed demand carries the reason"
    assert fleet.db.value("SELECT load_failures FROM cortex.models WHERE name = 'm1'") == "3"
    tries = fleet.db.rows("SELECT p.id, n.name, p.state, p.reason FROM cortex.placements p"
                          " JOIN cortex.models m ON m.id = p.model_id"
                          " JOIN cortex.nodes n ON n.id = p.node_id WHERE m.name = 'm1'")
    assert len(tries) == 3 and all(t[2] == "failed" and t[3] for t in tries), tries
    assert all("m1" not in n.loaded() for n in fleet.neurons.values())
    # not retried on its own: no fourth placement after a few more cycles
    time.sleep(1.5)
    assert len(fleet.placements("m1", ("requested", "loading", "ready", "failed"))) == 3
