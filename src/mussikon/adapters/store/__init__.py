"""Event store and document store adapters: in memory, SQLite, PostgreSQL."""
