"""What saga steps act through: the marketplace's commands, the aggregates, the outbound ports."""

from __future__ import annotations

from dataclasses import dataclass

from mussikon.application.marketplace import Marketplace
from mussikon.application.repository import Repository
from mussikon.application.sagas.reservations import MusicianDays
from mussikon.ports.notifier import Notifier
from mussikon.ports.payments import PaymentGateway


@dataclass(frozen=True, slots=True)
class SagaServices:
    """The dependencies of the sagas' steps, wired once by bootstrap."""

    marketplace: Marketplace
    repository: Repository
    notifier: Notifier
    gateway: PaymentGateway
    days: MusicianDays
