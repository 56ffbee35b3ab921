"""Pure ac7 logic shared by the broker and the CLI: no network, no event loop."""

__version__ = "0.1.0"
