"""The application: commands (`marketplace`), event handlers, sagas, projections and the
message templates, written against the ports only."""
