"""Test markers shared by the suite.

``standins``: tests that build the hub stand-ins (scripts/build_standins.py) and load them offline
through the real loaders. They take about a minute, so `make test` leaves them out
(``-m "not standins"``) and `make rehearse`, which needs the stand-ins anyway, runs them first.
"""


def pytest_configure(config):
    config.addinivalue_line("markers", "standins: builds and loads the hub stand-ins (run by make rehearse)")
