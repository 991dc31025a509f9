"""Chaos suite: a seeded scenario generator drives the real daemon, an oracle checks every event.

    python -m tests.chaos                      # the CI profile, a few seeds
    python -m tests.chaos --minutes 30         # longer: new seeds until the time is up
    python -m tests.chaos --seed 1234          # replay one scenario (a failing run prints its seed)

The CI test (tests/chaos/test_chaos.py) runs the same code with a small budget.
"""
