"""A clock the test moves by hand, for code that takes an injectable `clock` (seconds, monotonic)."""


class Clock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now
