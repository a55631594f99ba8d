"""Named errors of the domain rules. A rejected command raises one of these and writes nothing."""

from __future__ import annotations


class DomainError(Exception):
    """A business rule refused a command. `rule` names the rule, the message says why."""

    rule: str = "domain-rule"


class InvalidEmail(DomainError):
    rule = "valid-email"


class NoGenres(DomainError):
    rule = "at-least-one-genre"


class MissingField(DomainError):
    rule = "required-field"


class GigDateNotInFuture(DomainError):
    rule = "gig-date-in-future"


class AmountNotPositive(DomainError):
    rule = "amount-positive"


class FeeExceedsBudget(DomainError):
    rule = "fee-within-budget"


class AlreadyApplied(DomainError):
    rule = "one-application-per-musician-per-gig"


class GigNotOpen(DomainError):
    rule = "applications-only-to-open-gig"


class ApplicationNotAccepted(DomainError):
    rule = "contract-only-for-accepted-application"


class AmountMismatch(DomainError):
    rule = "amount-as-agreed"


class GigMismatch(DomainError):
    rule = "same-gig-as-the-application"


class ContractNotSigned(DomainError):
    rule = "payment-only-for-signed-contract"


class IllegalTransition(DomainError):
    rule = "legal-status-transition"


class NotFound(DomainError):
    rule = "exists"


class NotAParty(DomainError):
    rule = "only-a-party-signs"
