"""The `ac7 claude-code` runner: trace host, uploader, MCP bridge link, presence, orchestration."""
