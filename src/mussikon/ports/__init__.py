"""The ports: what the application needs from the outside world, as abstract classes that
the adapters implement (event store, document store, transport, notifier, payment gateway,
analytics, clock), and the few mechanisms that the application and the adapters both
build on them: the poll loop of every reader of the store (`polling`), leases (`leases`),
and what a reader does with an event no code can read (`undecodable`). Nothing here opens
a connection or a file: what reaches the outside goes through a port."""
