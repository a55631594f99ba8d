"""A local AMQP 1.0 peer that the official Azure Service Bus SDK (`azure-servicebus`, its
pure-Python `_pyamqp` stack) can be tested against: there is no Service Bus emulator here.

Built on python-qpid-proton. The SDK connects with `ServiceBusPeer.connection_string`
(`UseDevelopmentEmulator=true`: plain TCP to the peer's port, SASL ANONYMOUS) and uses its
public calls as against the service:

- one TCP port for both of the SDK's clients: a connection whose first bytes are AMQP's
  protocol header (`AMQP`) is handed to proton, any other is HTTP for the management endpoint
  (the SDK's administration client aims at the connection string's host and port too; with
  `UseDevelopmentEmulator=true` our provisioning speaks plain HTTP to it, as the .NET and
  JavaScript SDKs do for the emulator);
- queues, and topics whose subscriptions each get a copy of every message one of their rules
  admits (`rules.SqlFilter`: comparisons of `sys.Label`, `sys.MessageId` or an application
  property with text constants, `=` or `IN (...)`, joined by OR; `1=1`; no rule: nothing).
  Created through the Python API, a subscription's one rule admits a set of subjects,
  matched against the message's Subject or its `EventType` application property (none: all),
  changed with `set_rule`;
- the administration client's HTTP ATOM API (`management`): get, create, update and delete
  topics, get, create and update subscriptions (lock duration, MaxDeliveryCount), list, get,
  create, update and delete rules (a new subscription gets `$Default`, 1=1, as on the
  service), over the same entities the AMQP side uses;
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
  their time, keeping the sequence number given when scheduled;
- the largest message (a transfer: one message or a batch), 256 KiB as on the Standard tier
  unless `max_message_size` says otherwise: told to the SDK on its sender link (the size
  its `ServiceBusMessageBatch` fills up to), a larger transfer rejected with
  `amqp:link:message-size-exceeded`.

Not modelled: sessions, TTL expiry (kept on the message, never applied), authorization
(any token is accepted), quotas, auto-forwarding, transactions, correlation
filters, rule actions and SQL filters beyond the forms above (refused with 400), partitions,
queues through the administration client, HTTPS (the SDK 7.15's administration client asks
for it even with `UseDevelopmentEmulator=true`: a client must aim it at http), the
namespace's properties. A duplicate sent to
schedule-message gets sequence number 0. Lock expiry and scheduled times are looked at every
50 ms. Where the peer and the service differ, the peer is wrong.

Run alone: `python -m tests.servicebus_peer --port 5673 --queue q --subscription t/s`; with no
entity, `MUSSIKON_BROKER_URL=<the connection string it prints> mussikon broker provision`
creates the transport's entities on it.
"""

from .broker import EntityOptions
from .server import ServiceBusPeer

__all__ = ["EntityOptions", "ServiceBusPeer"]
