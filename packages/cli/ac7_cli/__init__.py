"""The ac7 command line."""
