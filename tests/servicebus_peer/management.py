"""The peer's management endpoint: the part of the namespace's HTTP ATOM API that the SDK's
administration client (`ServiceBusAdministrationClient`) uses to read, create, update and
delete topics, subscriptions and rules, over the peer's own entities (an entity created here
is the one the AMQP side sends to and receives from, and a rule put here is applied).

Paths, as the SDK asks for them (`?api-version=…` ignored; names case-insensitive):
`/{topic}`, `/{topic}/subscriptions/{name}`, `/{topic}/subscriptions/{name}/rules` (a feed)
and `/{topic}/subscriptions/{name}/rules/{rule}`. GET of something missing answers an empty
feed with 200, as the service does; PUT creates (409 if it exists) or, with `If-Match: *`,
updates (404 if missing); DELETE removes (404 if missing). A description keeps what the peer
models: a topic's duplicate detection, a subscription's lock duration and MaxDeliveryCount,
a rule's SQL filter (`rules.SqlFilter`; a correlation filter or an action is refused with
400). Queues are not served. Any credential is accepted.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

from .broker import EntityOptions, Subscription, Topic
from .rules import TRUE, SqlFilter, Unsupported

if TYPE_CHECKING:
    from .server import ServiceBusPeer

ATOM = "http://www.w3.org/2005/Atom"
SB = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
_DURATION = re.compile(r"P(?:(?P<d>[\d.]+)D)?(?:T(?:(?P<h>[\d.]+)H)?(?:(?P<m>[\d.]+)M)?"
                       r"(?:(?P<s>[\d.]+)S)?)?$")
_DEFAULT_WINDOW = 600.0


class _Failure(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def seconds(duration: str) -> float:
    """An ISO 8601 duration (`PT1M`, `P1DT2H`, `PT0.5S`) in seconds."""
    found = _DURATION.match(duration.strip())
    if found is None or not any(found.groupdict().values()):
        raise _Failure(400, f"{duration!r} is not an ISO 8601 duration")
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(float(found[unit] or 0) * factor for unit, factor in units.items())


def _duration(value: float) -> str:
    return f"PT{value:g}S"


def _description(body: bytes, kind: str) -> ET.Element:
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise _Failure(400, f"the body is not XML: {exc}") from None
    found = root.find(f"{{{ATOM}}}content/{{{SB}}}{kind}")
    if found is None:
        raise _Failure(400, f"the body holds no {kind}")
    return found


def _field(description: ET.Element, name: str) -> str | None:
    found = description.find(f"{{{SB}}}{name}")
    return None if found is None or found.text is None else found.text.strip()


class ManagementEndpoint:
    """Answers one request against the peer's entities, under the peer's lock."""

    def __init__(self, peer: ServiceBusPeer) -> None:
        self.peer = peer

    def answer(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, str]:
        """The status and the XML to send back."""
        parts = [unquote(p) for p in urlsplit(target).path.strip("/").split("/") if p]
        update = headers.get("If-Match") == "*"
        try:
            with self.peer._lock:
                return self._route(method, parts, update, body)
        except _Failure as failure:
            return failure.status, (f"<Error><Code>{failure.status}</Code><Detail>"
                                    f"{escape(failure.detail)}</Detail></Error>")

    def _route(self, method: str, parts: list[str], update: bool, body: bytes) -> tuple[int, str]:
        if len(parts) == 1:
            return self._topic(method, parts[0], update, body)
        if len(parts) >= 3 and parts[1].lower() == "subscriptions":
            topic = self._topic_named(parts[0])
            if len(parts) == 3:
                return self._subscription(method, topic, parts[2], update, body)
            subscription = self._subscription_named(topic, parts[2])
            if parts[3:] == ["rules"] and method == "GET":
                entries = "".join(self._rule_entry(name, rule)
                                  for name, rule in subscription.rules.items())
                return 200, _feed(entries)
            if len(parts) == 5 and parts[3].lower() == "rules":
                return self._rule(method, subscription, parts[4], update, body)
        raise _Failure(400, f"the peer serves no {method} /{'/'.join(parts)}")

    def _topic_named(self, name: str) -> Topic:
        topic = self.peer._targets.get(name.lower())
        if not isinstance(topic, Topic):
            raise _Failure(404, f"no topic {name}")
        return topic

    def _subscription_named(self, topic: Topic, name: str) -> Subscription:
        subscription = topic.subscriptions.get(name.lower())
        if subscription is None:
            raise _Failure(404, f"no subscription {topic.name}/{name}")
        return subscription

    def _topic(self, method: str, name: str, update: bool, body: bytes) -> tuple[int, str]:
        existing = self.peer._targets.get(name.lower())
        if existing is not None and not isinstance(existing, Topic):
            raise _Failure(400, f"{name} is a queue: the peer's management endpoint serves "
                                "topics only")
        if method == "GET":
            return 200, self._topic_entry(existing) if existing else _feed("")
        if method == "DELETE":
            if existing is None:
                raise _Failure(404, f"no topic {name}")
            self.peer.delete_topic(name)
            return 200, ""
        if method != "PUT":
            raise _Failure(405, f"{method} on a topic")
        description = _description(body, "TopicDescription")
        self._check_put(existing, update, f"topic {name}")
        window: float | None = None
        if (_field(description, "RequiresDuplicateDetection") or "false").lower() == "true":
            given = _field(description, "DuplicateDetectionHistoryTimeWindow")
            window = seconds(given) if given else _DEFAULT_WINDOW
        if existing is None:
            self.peer.create_topic(name, replace(self.peer.defaults,
                                                 duplicate_detection_window=window))
            created = self.peer._targets[name.lower()]
            assert isinstance(created, Topic)
            return 201, self._topic_entry(created)
        if (window is None) != (existing.options.duplicate_detection_window is None):
            raise _Failure(400, "RequiresDuplicateDetection cannot be changed on an existing "
                                "topic")
        existing.options = replace(existing.options, duplicate_detection_window=window)
        return 200, self._topic_entry(existing)

    def _subscription(self, method: str, topic: Topic, name: str, update: bool,
                      body: bytes) -> tuple[int, str]:
        existing = topic.subscriptions.get(name.lower())
        if method == "GET":
            return 200, self._subscription_entry(name, existing) if existing else _feed("")
        if method != "PUT":
            raise _Failure(405, f"{method} on a subscription")
        description = _description(body, "SubscriptionDescription")
        self._check_put(existing, update, f"subscription {topic.name}/{name}")
        options = existing.options if existing else self.peer.defaults
        lock = _field(description, "LockDuration")
        count = _field(description, "MaxDeliveryCount")
        options = replace(options,
                          lock_duration=seconds(lock) if lock else options.lock_duration,
                          max_delivery_count=int(count) if count else options.max_delivery_count)
        if existing is None:
            self.peer.create_subscription(topic.name, name, None, options)
            return 201, self._subscription_entry(name, topic.subscriptions[name.lower()])
        _set_options(existing, options)
        return 200, self._subscription_entry(name, existing)

    def _rule(self, method: str, subscription: Subscription, name: str, update: bool,
              body: bytes) -> tuple[int, str]:
        existing = subscription.rules.get(name)
        if method == "GET":
            return 200, self._rule_entry(name, existing) if existing else _feed("")
        if method == "DELETE":
            if existing is None:
                raise _Failure(404, f"no rule {name} on {subscription.path}")
            del subscription.rules[name]
            return 200, ""
        if method != "PUT":
            raise _Failure(405, f"{method} on a rule")
        description = _description(body, "RuleDescription")
        self._check_put(existing, update, f"rule {name} on {subscription.path}")
        rule = _filter(description)
        subscription.rules[name] = rule
        return (200 if existing else 201), self._rule_entry(name, rule)

    @staticmethod
    def _check_put(existing: object, update: bool, what: str) -> None:
        if existing is not None and not update:
            raise _Failure(409, f"{what} exists already")
        if existing is None and update:
            raise _Failure(404, f"{what} does not exist")

    def _topic_entry(self, topic: Topic) -> str:
        window = topic.options.duplicate_detection_window
        fields = (f"<RequiresDuplicateDetection>{'true' if window is not None else 'false'}"
                  "</RequiresDuplicateDetection><DuplicateDetectionHistoryTimeWindow>"
                  f"{_duration(window if window is not None else _DEFAULT_WINDOW)}"
                  "</DuplicateDetectionHistoryTimeWindow><Status>Active</Status>")
        return _entry(topic.name, "TopicDescription", fields)

    def _subscription_entry(self, name: str, subscription: Subscription) -> str:
        options = subscription.options
        fields = (f"<LockDuration>{_duration(options.lock_duration)}</LockDuration>"
                  f"<MaxDeliveryCount>{options.max_delivery_count}</MaxDeliveryCount>"
                  "<Status>Active</Status>")
        return _entry(name, "SubscriptionDescription", fields)

    def _rule_entry(self, name: str, rule: SqlFilter) -> str:
        kind = "TrueFilter" if rule is TRUE else "SqlFilter"
        fields = (f'<Filter i:type="{kind}"><SqlExpression>{escape(rule.expression)}'
                  "</SqlExpression><CompatibilityLevel>20</CompatibilityLevel></Filter>"
                  f'<Action i:type="EmptyRuleAction"/><Name>{escape(name)}</Name>')
        return _entry(name, "RuleDescription", fields)


def _set_options(subscription: Subscription, options: EntityOptions) -> None:
    subscription.options = options
    if subscription.dead_letters is not None:
        subscription.dead_letters.options = options


def _filter(description: ET.Element) -> SqlFilter:
    found = description.find(f"{{{SB}}}Filter")
    kind = "" if found is None else found.get(f"{{{XSI}}}type", "")
    action = description.find(f"{{{SB}}}Action")
    if action is not None and action.get(f"{{{XSI}}}type", "EmptyRuleAction") != \
            "EmptyRuleAction":
        raise _Failure(400, "the peer does not model rule actions")
    if found is None or kind == "TrueFilter":
        return TRUE
    if kind == "FalseFilter":
        return SqlFilter.parse("1=0")
    if kind != "SqlFilter":
        raise _Failure(400, f"the peer does not model a {kind or 'filter'} of that kind")
    try:
        return SqlFilter.parse(_field(found, "SqlExpression") or "")
    except Unsupported as exc:
        raise _Failure(400, str(exc)) from None


def _entry(title: str, kind: str, fields: str) -> str:
    return (f'<entry xmlns="{ATOM}"><id>{escape(title)}</id><title type="text">'
            f'{escape(title)}</title><content type="application/xml"><{kind} xmlns="{SB}" '
            f'xmlns:i="{XSI}">{fields}</{kind}></content></entry>')


def _feed(entries: str) -> str:
    return (f'<feed xmlns="{ATOM}"><title type="text">Publicly Listed Services</title>'
            f"{entries}</feed>")


class ManagementRequestHandler(BaseHTTPRequestHandler):
    """One HTTP connection to the management endpoint (`server` is the peer's endpoint)."""

    endpoint: ManagementEndpoint
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, text = self.endpoint.answer(self.command, self.path, self.headers, body)
        encoded = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/atom+xml;type=entry;charset=utf-8")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    do_GET = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read what the SDK reports."""
