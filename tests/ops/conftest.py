"""tests/ops/conftest.py — pytest settings of the ops tests.

A file whose tests all skipped (haproxy, PostgreSQL, a binary or the model absent) ends with
exit status 77, which ctest reports as skipped instead of passed.
"""


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or exitstatus != 0:
        return
    if reporter.stats.get("skipped") and not reporter.stats.get("passed"):
        session.exitstatus = 77
