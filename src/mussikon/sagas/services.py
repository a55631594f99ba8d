"""What saga steps act through: the marketplace's commands, the aggregates, the outbound ports."""

from __future__ import annotations

from dataclasses import dataclass

from mussikon.adapters.notifications import Notifier
from mussikon.adapters.payments import PaymentGateway
from mussikon.sagas.reservations import MusicianDays
from mussikon.service.marketplace import Marketplace
from mussikon.service.repository import Repository


@dataclass(frozen=True, slots=True)
class SagaServices:
    """The dependencies of the sagas' steps, wired once by bootstrap."""

    marketplace: Marketplace
    repository: Repository
    notifier: Notifier
    gateway: PaymentGateway
    days: MusicianDays
