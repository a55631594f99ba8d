"""`provision`: the Service Bus entities the transport uses (`entities`), created or brought to
what is needed through the SDK's administration client, saying what it did, line by line.

- the topic, with duplicate detection (the relay sets `MessageId` to the event id, so that a
  re-publish after a crash is dropped by the namespace);
- one subscription per subscription of ours (and the recorder's), with `MaxDeliveryCount`
  and the lock duration of `EntitySettings`;
- on each, one rule, `mussikon`: a SQL filter `sys.Label IN (...)` admitting the subjects
  `subscription_rules` gives it (its event types, and the retry subject of the copies
  scheduled for it alone); every other rule ($Default, which admits everything, included)
  is removed.

Idempotent: what exists as needed is left alone. Needs the Manage right on the namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.transport import AioHttpTransport
from azure.servicebus.aio.management import ServiceBusAdministrationClient
from azure.servicebus.management import RuleProperties, SqlRuleFilter

from mussikon.config import ServiceBusConnectionString

RULE = "mussikon"
"""The name of the one rule each subscription keeps."""

Report = Callable[[str], None]


@dataclass(frozen=True)
class EntitySettings:
    """How the entities are configured. `lock_duration`: a received message's lock before the
    consumer's renewals (which go on while its handler runs), so a crashed worker's messages
    come back after at most this long; `max_delivery_count`: deliveries before the namespace
    dead-letters a message that never gets settled (one that kills its consumer);
    `duplicate_detection_window`: how long the topic remembers a MessageId."""

    max_delivery_count: int = 10
    lock_duration: timedelta = timedelta(seconds=60)
    duplicate_detection_window: timedelta = timedelta(minutes=10)


class ProvisioningError(Exception):
    """The namespace refused or could not be reached; the message never holds the key."""


def rule_expression(subjects: Iterable[str]) -> str:
    """The SQL filter admitting messages whose Subject (`sys.Label`) is one of `subjects`."""
    quoted = ", ".join("'" + subject.replace("'", "''") + "'" for subject in sorted(subjects))
    return f"sys.Label IN ({quoted})"


class PlainHttpTransport(AioHttpTransport):  # type: ignore[misc]  # typed Any: imported lazily
    """The management endpoint over plain HTTP, for `UseDevelopmentEmulator=true` (as the .NET
    and JavaScript SDKs do then; the Python SDK's administration client asks for HTTPS)."""

    async def send(self, request: Any, **config: Any) -> Any:
        if request.url.startswith("https://"):  # a retry sends the same request again
            request.url = "http://" + request.url.removeprefix("https://")
        return await super().send(request, **config)


async def provision(connection: str, topic: str, rules: Mapping[str, frozenset[str]],
                    report: Report, settings: EntitySettings | None = None, *,
                    timeout: float = 30.0) -> int:
    """Create the topic, the subscriptions and their rules, or bring them to what is needed,
    reporting one line per thing done or found as needed; the number of changes made.
    ProvisioningError if the namespace refuses, cannot be reached, or holds a topic that
    cannot be made right."""
    parsed = ServiceBusConnectionString.parse(connection)
    options: dict[str, Any] = dict(connection_timeout=timeout, read_timeout=timeout,
                                   retry_total=2)
    if parsed.emulator:
        options["transport"] = PlainHttpTransport(**options)
    client = ServiceBusAdministrationClient.from_connection_string(connection, **options)
    provisioner = _Provisioner(client, topic, report, settings or EntitySettings())
    try:
        async with client:
            await provisioner.topic()
            for name, subjects in rules.items():
                await provisioner.subscription(name, rule_expression(subjects))
    except AzureError as exc:
        where = parsed.host + (f":{parsed.port}" if parsed.port else "")
        raise ProvisioningError(f"Service Bus {where}: {provisioner.doing} failed: "
                                f"{_reason(exc, parsed)}") from None
    if provisioner.problems:
        raise ProvisioningError("; ".join(provisioner.problems))
    return provisioner.changes


def _reason(exc: AzureError, connection: ServiceBusConnectionString) -> str:
    """One line on why, the key never in it."""
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        reason = f"HTTP {exc.status_code} {exc.reason or ''}".rstrip()
        if exc.status_code == 401:
            reason += " (the key is wrong, or lacks the Manage right on the namespace)"
    else:
        reason = (str(exc.message) if exc.message else type(exc).__name__).splitlines()[0]
    text = " ".join(reason.split())
    return text.replace(connection.value, str(connection))


class _Provisioner:
    def __init__(self, client: ServiceBusAdministrationClient, topic_name: str,
                 report: Report, settings: EntitySettings) -> None:
        self.client, self.topic_name, self.report = client, topic_name, report
        self.settings = settings
        self.doing = "connecting"
        self.problems: list[str] = []
        self.changes = 0

    def changed(self, line: str) -> None:
        self.changes += 1
        self.report(line)

    async def topic(self) -> None:
        name, window = self.topic_name, self.settings.duplicate_detection_window
        self.doing = f"reading topic {name}"
        try:
            existing = await self.client.get_topic(name)
        except ResourceNotFoundError:
            self.doing = f"creating topic {name}"
            await self.client.create_topic(name, requires_duplicate_detection=True,
                                           duplicate_detection_history_time_window=window)
            self.changed(f"created topic {name} (duplicate detection "
                        f"{_seconds(window)})")
            return
        if not existing.requires_duplicate_detection:
            self.problems.append(
                f"topic {name} exists without duplicate detection, which cannot be turned on "
                "for an existing topic: delete it (its subscriptions and their messages go with "
                "it) and provision again")
            self.report(f"topic {name} exists, without duplicate detection")
        elif existing.duplicate_detection_history_time_window != window:
            self.doing = f"updating topic {name}"
            before = existing.duplicate_detection_history_time_window
            await self.client.update_topic(existing,
                                           duplicate_detection_history_time_window=window)
            self.changed(f"topic {name}: duplicate detection window {_seconds(before)} → "
                        f"{_seconds(window)}")
        else:
            self.report(f"topic {name} exists")

    async def subscription(self, name: str, expression: str) -> None:
        topic, settings = self.topic_name, self.settings
        path = f"{topic}/{name}"
        self.doing = f"reading subscription {path}"
        try:
            existing = await self.client.get_subscription(topic, name)
        except ResourceNotFoundError:
            self.doing = f"creating subscription {path}"
            await self.client.create_subscription(
                topic, name, max_delivery_count=settings.max_delivery_count,
                lock_duration=settings.lock_duration)
            self.changed(f"created subscription {path} (max delivery count "
                        f"{settings.max_delivery_count}, lock {_seconds(settings.lock_duration)})")
            # Nothing waits for a subscription just created: the $Default rule goes first, so
            # that it admits nothing else meanwhile.
            await self._rules(path, name, expression, remove_first=True)
            return
        changes = []
        if existing.max_delivery_count != settings.max_delivery_count:
            changes.append(f"max delivery count {existing.max_delivery_count} → "
                           f"{settings.max_delivery_count}")
        if existing.lock_duration != settings.lock_duration:
            changes.append(f"lock {_seconds(existing.lock_duration)} → "
                           f"{_seconds(settings.lock_duration)}")
        if changes:
            self.doing = f"updating subscription {path}"
            await self.client.update_subscription(
                topic, existing, max_delivery_count=settings.max_delivery_count,
                lock_duration=settings.lock_duration)
            self.changed(f"subscription {path} updated: {', '.join(changes)}")
        else:
            self.report(f"subscription {path} exists")
        await self._rules(path, name, expression, remove_first=False)

    async def _rules(self, path: str, name: str, expression: str, *,
                     remove_first: bool) -> None:
        """Leave the rule `mussikon` with `expression` alone on the subscription. On one in use,
        the needed rule is put in place before the others go, so no message it needs is missed
        meanwhile."""
        topic = self.topic_name
        self.doing = f"listing the rules of {path}"
        rules = [rule async for rule in self.client.list_rules(topic, name)]
        ours = next((rule for rule in rules if rule.name == RULE), None)
        others = [rule for rule in rules if rule.name != RULE]
        if remove_first:
            await self._remove(path, name, others)
        if ours is None:
            self.doing = f"creating rule {path}/{RULE}"
            await self.client.create_rule(topic, name, RULE, filter=SqlRuleFilter(expression))
            self.changed(f"created rule {path}/{RULE}: {expression}")
        elif not _is(ours, expression):
            self.doing = f"replacing rule {path}/{RULE}"
            ours.filter, ours.action = SqlRuleFilter(expression), None
            await self.client.update_rule(topic, name, ours)
            self.changed(f"rule {path}/{RULE} replaced: {expression}")
        else:
            self.report(f"rule {path}/{RULE} exists")
        if not remove_first:
            await self._remove(path, name, others)

    async def _remove(self, path: str, name: str, rules: list[RuleProperties]) -> None:
        for rule in rules:
            self.doing = f"deleting rule {path}/{rule.name}"
            await self.client.delete_rule(self.topic_name, name, rule.name)
            self.changed(f"rule {path}/{rule.name} deleted")


def _is(rule: RuleProperties, expression: str) -> bool:
    found = rule.filter
    return (type(found) is SqlRuleFilter and found.sql_expression == expression
            and rule.action is None)


def _seconds(value: timedelta | str | None) -> str:
    return f"{value.total_seconds():g} s" if isinstance(value, timedelta) else str(value)
