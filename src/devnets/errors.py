"""The one error type for bad settings: one line naming the key, the value and what is allowed."""


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


def require(ok: bool, key: str, value: object, allowed: str) -> None:
    """Raise :class:`InvalidSetting` unless ``ok``."""
    if not ok:
        raise InvalidSetting(key, value, allowed)
