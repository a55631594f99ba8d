"""The service layer: commands on aggregates, saved to the event store."""
