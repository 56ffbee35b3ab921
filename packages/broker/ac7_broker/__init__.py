"""The ac7 broker."""
