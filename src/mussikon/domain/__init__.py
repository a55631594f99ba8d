"""The pure domain: events, aggregates, commands and their named errors. No I/O here."""
