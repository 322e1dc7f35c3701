"""The root of rtml's domain errors: callers (CLI, handlers) map them to one clear message."""


class RtmlError(Exception):
    """A domain error with a message meant for the person or system that sent the input."""
