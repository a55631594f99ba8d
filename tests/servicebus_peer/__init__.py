"""A local AMQP 1.0 peer that the official Azure Service Bus SDK (`azure-servicebus`, its
pure-Python `_pyamqp` stack) can be tested against: there is no Service Bus emulator here.

Built on python-qpid-proton. The SDK connects with `ServiceBusPeer.connection_string`
(`UseDevelopmentEmulator=true`: plain TCP to the peer's port, SASL ANONYMOUS) and uses its
public calls as against the service:

- queues, and topics whose subscriptions each get a copy of every message their rule admits
  (a set of subjects matched against the message's Subject or its `EventType` application
  property; no rule admits all), set at creation or with `set_rule`;
- sending one message or a batch (one transfer of format 0x80013700, a data section per
  message); the properties, application properties and body are kept byte for byte;
- receiving in PEEK_LOCK (the delivery tag is the lock token; `x-opt-locked-until`,
  `x-opt-sequence-number`, `x-opt-enqueued-time` annotations; the header always carries
  the delivery count) and RECEIVE_AND_DELETE; complete, abandon (redelivered, count + 1),
  defer, dead-letter with reason and description (into `<entity>/$DeadLetterQueue`, the two
  copied into application properties), each echoed settled with the same outcome as the
  service does (a settlement after the lock is gone is echoed `rejected` with
  `com.microsoft:message-lock-lost`); a release (a message that reached a receiver outside a
  receive call) puts the message back uncounted;
- lock expiry (redelivered, count + 1), MaxDeliveryCount (dead-lettered with reason
  MaxDeliveryCountExceeded), duplicate detection by MessageId within a window;
- `$management`: peek-message, renew-lock, receive-by-sequence-number (deferred messages),
  update-disposition (counted in `management_settlements`: the SDK falls back to it when a
  settlement on the link goes unconfirmed), schedule-message and cancel-scheduled-message;
  scheduled messages (also those sent with a scheduled enqueue time) enter their entity at
  their time, keeping the sequence number given when scheduled.

Not modelled: sessions, TTL expiry (kept on the message, never applied), authorization
(any token is accepted), quotas and size limits, auto-forwarding, transactions, SQL or
correlation filters, partitions, the administration client (HTTP). A duplicate sent to
schedule-message gets sequence number 0. Lock expiry and scheduled times are looked at every
50 ms. Where the peer and the service differ, the peer is wrong.

Run alone: `python -m tests.servicebus_peer --port 5673 --queue q --subscription t/s`.
"""

from .broker import EntityOptions
from .server import ServiceBusPeer

__all__ = ["EntityOptions", "ServiceBusPeer"]
