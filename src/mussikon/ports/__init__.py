"""The ports: what the application needs from the outside world, as abstract classes that
the adapters implement (event store, document store, transport, notifier, payment gateway,
analytics, clock), with their value types and errors. Nothing here does I/O."""
