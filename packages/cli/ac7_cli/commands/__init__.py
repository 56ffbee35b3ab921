"""One module per `ac7` verb."""
