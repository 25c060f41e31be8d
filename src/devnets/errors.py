"""The one error type for bad settings: one line naming the key, the value and what is allowed."""

import math


class InvalidSetting(ValueError):
    """A setting outside what devnets accepts.

    Raised by the class that owns the setting (the data module, the model, a callback), with the
    setting's own name as ``key``; ``devnets.train`` renames it to the config key the user typed.
    """

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")

    def renamed(self, key: str) -> "InvalidSetting":
        return InvalidSetting(key, self.value, self.allowed)


def is_number(value: object) -> bool:
    """A finite int or float (not a bool, not a string a config left unconverted)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: object, minimum: int = 0) -> bool:
    """An int (not a bool) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def require(ok: bool, key: str, value: object, allowed: str) -> None:
    """Raise :class:`InvalidSetting` unless ``ok``."""
    if not ok:
        raise InvalidSetting(key, value, allowed)
