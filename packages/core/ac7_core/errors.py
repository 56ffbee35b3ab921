"""The one exception family the CLI turns into a single `ac7:` line."""


class Ac7Error(Exception):
    """An error whose message is fit to show a user as-is (one line, no secrets)."""
