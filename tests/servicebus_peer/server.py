"""The AMQP side of the peer: a proton container in a thread, speaking to the SDK's links
(claims-based security, senders, receivers, `$management`) on behalf of the broker model."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
import uuid
from typing import Any

from proton import (
    Array,
    Condition,
    Connection,
    Data,
    Delivery,
    Disposition,
    Event,
    Handler,
    Link,
    Message,
    Receiver,
    Sender,
    Session,
    Transport,
    symbol,
    timestamp,
)
from proton._handlers import IOHandler
from proton._io import IO
from proton.reactor import ApplicationEvent, Container, EventInjector

from .broker import (
    DEFAULT_RULE,
    Entity,
    EntityOptions,
    LockLost,
    Queue,
    SendTarget,
    Subscription,
    Topic,
)
from .codec import Envelope, owned, unbatch
from .management import ManagementEndpoint, ManagementRequestHandler
from .rules import TRUE, SqlFilter, subjects_filter

UNDESCRIBED = None
TICK = 0.05

MAX_MESSAGE_SIZE = 256 * 1024
"""The Standard tier's largest message, in bytes (Premium takes up to 100 MiB)."""
"""Seconds between two looks at scheduled messages and lock expiry."""

SETTLEMENTS = {"completed": "complete", "abandoned": "abandon", "defered": "defer",
               "suspended": "dead_letter"}
"""update-disposition's statuses (the SDK's spelling) and the entity method each applies."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _path(address: str | None) -> str:
    """The entity path of a link address (`amqps://host:port/queue/$management` -> `queue/
    $management`), lower-cased: entity names are case-insensitive."""
    address = address or ""
    if "://" in address:
        address = address.split("://", 1)[1].partition("/")[2]
    return address.strip("/").lower()


def _decoded(encoded: bytes) -> Message:
    message = Message()
    message.decode(encoded)
    message.body = owned(message.body)
    return message


def _not_found(address: str | None) -> Condition:
    return Condition("amqp:not-found", f"The messaging entity '{address}' could not be found "
                                       "(create it on the peer first).")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _delivery(link: Sender, tag: bytes) -> Delivery:
    """A new delivery with a binary tag: proton's annotation says str, but its binding takes
    bytes as they are (a str would be sent as its UTF-8, not the UUID the SDK reads)."""
    return link.delivery(tag)  # type: ignore[arg-type]


def _elements(value: Any) -> list[Any]:
    return list(value.elements) if isinstance(value, Array) else list(value or [])


class _Reply(Exception):
    """A `$management` request that fails: its status code and error condition."""

    def __init__(self, status: int, condition: str, description: str) -> None:
        super().__init__(description)
        self.status, self.condition, self.description = status, condition, description


class ServiceBusPeer:
    """A local stand-in for a Service Bus namespace that the official SDK can talk to. Create
    entities before the SDK uses them (the service needs them to exist too); `start()` or
    `with` runs it on a free port (or `port`) in a thread."""

    def __init__(self, port: int = 0, defaults: EntityOptions | None = None, *,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.port = port or _free_port()
        self.defaults = defaults or EntityOptions()
        self.max_message_size = max_message_size
        """The largest transfer a sender may send, in bytes (a message, or a batch of them),
        told to the SDK when its sender link attaches; a larger one is rejected with
        `amqp:link:message-size-exceeded`."""
        self.management_settlements = 0
        """Settlements received through `$management` update-disposition: the SDK's fallback
        when a settlement on the receive link goes unconfirmed (and its only way for
        deferred messages received by sequence number)."""
        self._lock = threading.RLock()
        self._targets: dict[str, SendTarget] = {}
        self._entities: dict[str, Entity] = {}
        self._handler = _Handler(self)
        self._container = Container(self._handler)
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._injector = EventInjector()
        self._arriving: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        """AMQP connections accepted, for proton to take on its thread."""
        self._management = ManagementEndpoint(self)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._error: BaseException | None = None

    @property
    def connection_string(self) -> str:
        """What the SDK connects with: plain TCP to this port (UseDevelopmentEmulator)."""
        return (f"Endpoint=sb://127.0.0.1:{self.port};SharedAccessKeyName=RootManageSharedAccessKey;"
                "SharedAccessKey=local;UseDevelopmentEmulator=true")

    def create_queue(self, name: str, options: EntityOptions | None = None) -> None:
        with self._lock:
            queue = Queue(name, options or self.defaults)
            self._targets[name.lower()] = queue
            self._add_entity(queue)

    def create_topic(self, name: str, options: EntityOptions | None = None) -> None:
        with self._lock:
            self._targets[name.lower()] = Topic(name, options or self.defaults)

    def create_subscription(self, topic: str, name: str, subjects: set[str] | None = None,
                            options: EntityOptions | None = None) -> None:
        """A subscription to `topic`, admitting the messages whose Subject or EventType is in
        `subjects` (all when None)."""
        with self._lock:
            target = self._targets[topic.lower()]
            assert isinstance(target, Topic), f"{topic} is not a topic"
            subscription = Subscription(f"{topic}/Subscriptions/{name}",
                                        options or target.options, _rules(subjects))
            target.subscriptions[name.lower()] = subscription
            self._add_entity(subscription)

    def topics(self) -> set[str]:
        """The names of the topics created, lower-cased."""
        with self._lock:
            return {name for name, target in self._targets.items() if isinstance(target, Topic)}

    def subscriptions(self, topic: str) -> set[str]:
        """The names of the topic's subscriptions, lower-cased."""
        with self._lock:
            target = self._targets[topic.lower()]
            assert isinstance(target, Topic), f"{topic} is not a topic"
            return set(target.subscriptions)

    def set_rule(self, topic: str, name: str, subjects: set[str] | None) -> None:
        """Replace a subscription's rule: the subjects it admits from now on (None: all)."""
        with self._lock:
            target = self._targets[topic.lower()]
            assert isinstance(target, Topic), f"{topic} is not a topic"
            target.subscriptions[name.lower()].rules = _rules(subjects)

    def _add_entity(self, entity: Entity) -> None:
        self._entities[entity.path.lower()] = entity
        if entity.dead_letters is not None:
            self._entities[entity.dead_letters.path.lower()] = entity.dead_letters

    def delete_topic(self, name: str) -> None:
        """Remove a topic, its subscriptions and their messages."""
        with self._lock:
            topic = self._targets.pop(name.lower())
            assert isinstance(topic, Topic), f"{name} is not a topic"
            for subscription in topic.subscriptions.values():
                self._entities.pop(subscription.path.lower(), None)
                if subscription.dead_letters is not None:
                    self._entities.pop(subscription.dead_letters.path.lower(), None)

    def start(self) -> ServiceBusPeer:
        """Listen and serve; after `stop()`, again on the same port with the same entities
        and messages (a namespace back after an outage: the locks held at the stop run out
        and their messages are delivered again)."""
        if self._thread is not None:
            self._handler = _Handler(self)
            self._container = Container(self._handler)
            self._injector = EventInjector()
            self._arriving = queue.SimpleQueue()
            self._stopping = False
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=64)
        self._listener.settimeout(TICK)
        self._container.selectable(self._injector)
        self._thread = threading.Thread(target=self._run, name="servicebus-peer",
                                        daemon=True)
        self._thread.start()
        self._acceptor = threading.Thread(target=self._accept, name="servicebus-peer-accept",
                                          daemon=True)
        self._acceptor.start()
        return self

    def _run(self) -> None:
        try:
            self._container.run()
        except BaseException as error:
            self._error = error
            raise

    def _accept(self) -> None:
        """Take connections on the one port, each to the side its first bytes ask for."""
        assert self._listener is not None
        with self._listener:
            while not self._stopping:
                try:
                    connection, address = self._listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._sniff, args=(connection, address),
                                 daemon=True).start()

    def _sniff(self, connection: socket.socket, address: Any) -> None:
        """AMQP's protocol header (`AMQP`) goes to proton, anything else is HTTP for the
        management endpoint."""
        connection.settimeout(10)
        try:
            first = connection.recv(4, socket.MSG_PEEK | socket.MSG_WAITALL)
        except OSError:
            connection.close()
            return
        if first == b"AMQP":
            self._arriving.put(connection)
            self._injector.trigger(ApplicationEvent("adopt"))
            return
        with connection:
            handler = type("Handler", (ManagementRequestHandler,),
                           {"endpoint": self._management})
            with contextlib.suppress(OSError):
                handler(connection, address, None)

    def stop(self) -> None:
        """Stop, closing the connections; raise what made the peer fail, if anything did."""
        self._stopping = True
        for thread in (self._acceptor, self._thread):
            if thread is not None:
                thread.join(timeout=10)
                assert not thread.is_alive(), "the Service Bus peer did not stop"
        if self._error is not None:
            raise RuntimeError("the Service Bus peer failed") from self._error

    def __enter__(self) -> ServiceBusPeer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # Called on the container's thread, the lock held.

    def target(self, address: str | None) -> SendTarget | None:
        return self._targets.get(_path(address))

    def entity(self, address: str | None) -> Entity | None:
        return self._entities.get(_path(address))

    def tick(self) -> None:
        now = _now_ms()
        for target in self._targets.values():
            target.enqueue_due(now)
        for entity in self._entities.values():
            entity.expire_locks(now)


def _rules(subjects: set[str] | None) -> dict[str, SqlFilter]:
    return {DEFAULT_RULE: TRUE if subjects is None else subjects_filter(subjects)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Handler(Handler):
    """proton's events, applied to the peer under its lock."""

    def __init__(self, peer: ServiceBusPeer) -> None:
        super().__init__()
        self.peer = peer
        self.receive_links: dict[Sender, Entity] = {}
        """The peer's senders to the SDK's receivers, and the entity each receives from."""
        self.replies: dict[tuple[Session, str], Sender] = {}
        """Where answers to `$cbs` and `$management` requests go: the peer's sender whose
        source is the request's node, in the request's session."""
        self.unsettled: dict[Delivery, tuple[Entity, uuid.UUID]] = {}
        self.connections: set[Connection] = set()
        self.closing = False
        """Stopping: the connections were closed, the container stops at the next tick."""

    def on_reactor_init(self, event: Event) -> None:
        event.container.schedule(TICK, self)

    def on_timer_task(self, event: Event) -> None:
        with self.peer._lock:
            if self.peer._stopping:
                if not self.closing:
                    self.closing = True
                    # Every connection closed, then a moment for the close to reach the
                    # clients: a stopped peer leaves no socket open (they see it go away).
                    for connection in self.connections:
                        connection.close()
                    event.container.schedule(0.2, self)
                    return
                event.container.stop()
                return
            self.peer.tick()
            for link in list(self.receive_links):
                self.dispatch(link)
        event.container.schedule(TICK, self)

    def on_adopt(self, event: Event) -> None:
        """Serve the AMQP connections accepted since (what proton's own acceptor does)."""
        while True:
            try:
                connection = self.peer._arriving.get_nowait()
            except queue.Empty:
                return
            IO._setupsocket(connection)
            container = self.peer._container
            amqp = container.connection(self)
            amqp._acceptor = self  # type: ignore[assignment]  # proton's: the socket is there
            transport = Transport(Transport.SERVER)
            transport.bind(amqp)
            selectable = container.selectable(delegate=connection)
            selectable._transport = transport  # type: ignore[attr-defined]
            transport._selectable = selectable
            IOHandler.update(transport, selectable, container.now)

    def on_connection_remote_open(self, event: Event) -> None:
        if event.connection is not None:
            self.connections.add(event.connection)
            event.connection.open()

    def on_session_remote_open(self, event: Event) -> None:
        if event.session is not None:
            event.session.open()

    def on_connection_remote_close(self, event: Event) -> None:
        if event.connection is not None:
            event.connection.close()

    def on_session_remote_close(self, event: Event) -> None:
        if event.session is not None:
            event.session.close()

    def on_link_remote_open(self, event: Event) -> None:
        link = event.link
        if link is None:
            return None
        with self.peer._lock:
            link.snd_settle_mode = link.remote_snd_settle_mode
            link.rcv_settle_mode = link.remote_rcv_settle_mode
            if isinstance(link, Sender):
                address = link.remote_source.address
                link.source.copy(link.remote_source)
                if _path(address) == "$cbs" or _path(address).endswith("$management"):
                    self.replies[(link.session, _path(address))] = link
                elif (entity := self.peer.entity(address)) is not None:
                    self.receive_links[link] = entity
                else:
                    return self._refuse(link, address)
            else:
                address = link.remote_target.address
                link.target.copy(link.remote_target)
                if not (_path(address) == "$cbs" or _path(address).endswith("$management")
                        or self.peer.target(address)):
                    return self._refuse(link, address)
                link.max_message_size = self.peer.max_message_size
                link.flow(100)
            link.open()
        return None

    @staticmethod
    def _refuse(link: Link, address: str | None) -> None:
        link.condition = _not_found(address)
        link.open()
        link.close()

    def on_link_remote_close(self, event: Event) -> None:
        with self.peer._lock:
            self._forget(lambda link: link == event.link)
        if event.link is not None:
            event.link.close()

    def on_transport_closed(self, event: Event) -> None:
        with self.peer._lock:
            self.connections.discard(event.connection)
            self._forget(lambda link: link.connection == event.connection)

    def _forget(self, gone: Any) -> None:
        """Drop the links `gone` names; their messages stay locked until the lock expires."""
        self.receive_links = {k: v for k, v in self.receive_links.items() if not gone(k)}
        self.replies = {k: v for k, v in self.replies.items() if not gone(v)}
        self.unsettled = {k: v for k, v in self.unsettled.items() if not gone(k.link)}

    def on_link_flow(self, event: Event) -> None:
        if isinstance(event.link, Sender) and event.link in self.receive_links:
            with self.peer._lock:
                self.dispatch(event.link)

    def dispatch(self, link: Sender) -> None:
        """Send the entity's available messages while the receiver gives credit."""
        entity = self.receive_links[link]
        receive_and_delete = link.remote_snd_settle_mode == Link.SND_SETTLED
        while link.credit > 0 and (message := entity.take()) is not None:
            if receive_and_delete:
                delivery = _delivery(link, uuid.uuid4().bytes_le)
                link.stream(message.encode())
                link.advance()
                delivery.settle()
            else:
                lock = entity.lock(message, _now_ms())
                delivery = _delivery(link, lock.token.bytes_le)  # the SDK's lock token
                link.stream(message.encode(lock.until_ms))
                link.advance()
                self.unsettled[delivery] = (entity, lock.token)
        if link.drain_mode:
            link.drained()

    def on_delivery(self, event: Event) -> None:
        delivery = event.delivery
        if delivery is None:
            return
        with self.peer._lock:
            if isinstance(event.link, Receiver):
                self._received(event.link, delivery)
            elif delivery.updated and delivery in self.unsettled:
                self._settled(delivery)

    def _received(self, link: Receiver, delivery: Delivery) -> None:
        if delivery.partial:
            return
        encoded = link.recv(delivery.pending) or b""
        link.advance()
        node = _path(link.target.address)
        if node == "$cbs":
            self._answer_cbs(link, _decoded(encoded))
        elif node.endswith("$management"):
            self._answer_management(link, _decoded(encoded))
        else:
            target = self.peer.target(link.target.address)
            if target is None:  # sent before the SDK saw its link refused
                delivery.local.condition = _not_found(link.target.address)
                delivery.update(Delivery.REJECTED)
                delivery.settle()
                return
            if len(encoded) > self.peer.max_message_size:
                delivery.local.condition = Condition(
                    "amqp:link:message-size-exceeded",
                    f"The received message (size {len(encoded)} bytes) exceeds the limit"
                    f" ({self.peer.max_message_size} bytes) currently allowed on the link.",
                    {"com.microsoft:tracking-id": str(uuid.uuid4())})  # the SDK reads an info
                delivery.update(Delivery.REJECTED)
                delivery.settle()
                return
            for message in unbatch(encoded):
                target.accept(Envelope.parse(message), _now_ms())
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        if link.credit < 50:
            link.flow(100)

    def _settled(self, delivery: Delivery) -> None:
        """The SDK settled a message it received: apply the outcome, and echo it settled (the
        SDK waits for the echo, then falls back to `$management`)."""
        entity, token = self.unsettled.pop(delivery)
        remote: Disposition = delivery.remote
        outcome = delivery.remote_state
        try:
            if outcome == Disposition.ACCEPTED:
                entity.complete(token)
            elif outcome == Disposition.MODIFIED:
                (entity.defer if remote.undeliverable else entity.abandon)(token)
                delivery.local.failed = remote.failed
                delivery.local.undeliverable = remote.undeliverable
            elif outcome == Disposition.REJECTED:
                info = remote.condition.info if remote.condition else None
                details: dict[Any, Any] = info if isinstance(info, dict) else {}
                entity.dead_letter(token, _text(details.get("DeadLetterReason")),
                                   _text(details.get("DeadLetterErrorDescription")))
            elif outcome == Disposition.RELEASED:
                entity.release(token)
            else:  # not an outcome (received): keep waiting for one
                self.unsettled[delivery] = (entity, token)
                return
        except LockLost:
            outcome = Disposition.REJECTED
            delivery.local.condition = Condition(
                "com.microsoft:message-lock-lost",
                "The lock supplied is invalid: it expired, or the message was settled already.")
        if not delivery.settled:
            delivery.update(outcome)
        delivery.settle()

    def _answer_cbs(self, link: Receiver, request: Message) -> None:
        # Any token is accepted: the peer models no authorization.
        self._reply(link, request, {"status-code": 202, "status-description": "Accepted"}, None)

    def _answer_management(self, link: Receiver, request: Message) -> None:
        node = _path(link.target.address).removesuffix("/$management")
        properties: dict[Any, Any] = dict(request.properties or {})
        operation = str(properties.get("operation", ""))
        body = request.body if isinstance(request.body, dict) else {}
        try:
            status, value = self._management(node, operation.removeprefix("com.microsoft:"), body)
            properties = {"statusCode": status, "statusDescription": "OK"}
        except _Reply as failure:
            value = None
            properties = {"statusCode": failure.status, "statusDescription": failure.description,
                          "errorCondition": symbol(failure.condition)}
        self._reply(link, request, properties, value)

    def _management(self, node: str, operation: str, body: dict[str, Any]) -> tuple[int, Any]:
        now = _now_ms()
        if operation in ("schedule-message", "cancel-scheduled-message"):
            target = self.peer.target(node)
            if target is None:
                raise _Reply(404, "amqp:not-found", f"no queue or topic {node}")
            if operation == "cancel-scheduled-message":
                for number in _elements(body.get("sequence-numbers")):
                    target.cancel(int(number))
                return 200, {}
            numbers = [target.accept(Envelope.parse(bytes(entry["message"])), now) or 0
                       for entry in body.get("messages", [])]
            return 200, {"sequence-numbers": Array(UNDESCRIBED, Data.LONG, *numbers)}
        entity = self.peer.entity(node)
        if entity is None:
            raise _Reply(404, "amqp:not-found", f"no queue or subscription {node}")
        try:
            return self._entity_operation(entity, operation, body, now)
        except LockLost as lost:
            raise _Reply(410, "com.microsoft:message-lock-lost",
                         f"The lock supplied is invalid: {lost}") from None

    def _entity_operation(self, entity: Entity, operation: str, body: dict[str, Any],
                          now: int) -> tuple[int, Any]:
        if operation == "peek-message":
            found = entity.peek(int(body.get("from-sequence-number", 1)),
                                int(body.get("message-count", 1)))
            if not found:
                return 204, {}
            return 200, {"messages": [{"message": m.encode()} for m in found]}
        tokens = [uuid.UUID(str(t)) for t in _elements(body.get("lock-tokens"))]
        if operation == "renew-lock":
            until = [timestamp(entity.renew(token, now)) for token in tokens]
            return 200, {"expirations": Array(UNDESCRIBED, Data.TIMESTAMP, *until)}
        if operation == "update-disposition":
            self.peer.management_settlements += len(tokens)
            for token in tokens:
                self._settle_link_delivery(token)
                settle = getattr(entity, SETTLEMENTS[str(body["disposition-status"])])
                if settle == entity.dead_letter:
                    settle(token, _text(body.get("deadletter-reason")),
                           _text(body.get("deadletter-description")))
                else:
                    settle(token)
            return 200, {}
        if operation == "receive-by-sequence-number":
            return 200, {"messages": self._receive_deferred(entity, body, now)}
        raise _Reply(501, "amqp:not-implemented", f"the peer does not model {operation}")

    def _receive_deferred(self, entity: Entity, body: dict[str, Any], now: int) -> list[Any]:
        numbers = [int(n) for n in _elements(body.get("sequence-numbers"))]
        if missing := [n for n in numbers if n not in entity.deferred]:
            raise _Reply(404, "com.microsoft:message-not-found",
                         f"no deferred message with sequence number {missing}")
        peek_lock = int(body.get("receiver-settle-mode", 1)) == Link.RCV_SECOND
        answers = []
        for number in numbers:
            message = entity.deferred.pop(number)
            if peek_lock:
                lock = entity.lock(message, now)
                answers.append({"message": message.encode(lock.until_ms), "lock-token": lock.token})
            else:
                answers.append({"message": message.encode()})
        return answers

    def _settle_link_delivery(self, token: uuid.UUID) -> None:
        """A message settled through `$management` needs no settlement on its link anymore."""
        for delivery, (_, held) in list(self.unsettled.items()):
            if held == token:
                del self.unsettled[delivery]
                delivery.settle()

    def _reply(self, link: Receiver, request: Message, properties: dict[str, Any],
               body: Any) -> None:
        reply_link = self.replies.get((link.session, _path(link.target.address)))
        if reply_link is None:
            return  # the SDK always opens its reply link first; nothing to answer on
        answer = Message(body=body, correlation_id=request.id, properties=properties)
        delivery = reply_link.send(answer)
        assert isinstance(delivery, Delivery)
        delivery.settle()

