"""What every reader that follows the store builds on (the projections, the in-process
transport's subscriptions, the outbox relay, the saga timeout scheduler): the feed of a store
with a global order (`feed`), the poll loop with back-off and wake-ups (`polling`), the lease
that lets one process at a time do a piece of work (`leases`), and what a reader does with
an event no code can read (`undecodable`). Written against the ports only; used by the
application and the adapters alike."""
