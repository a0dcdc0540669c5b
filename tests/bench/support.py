"""Helpers for the bench tests: the flags that make a short bench run fast."""

#: Budget and emulator quota far above a short run's need, and 0.1 s transitions: a run of a
#: few dozen stops takes about a second.
FAST = [
    "--budget-rate",
    "500",
    "--budget-burst",
    "500",
    "--emulator-quota-rate",
    "1000",
    "--emulator-quota-burst",
    "1000",
    "--emulator-transition-seconds",
    "0.1",
]
