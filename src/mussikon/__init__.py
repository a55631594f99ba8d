"""MussikOn: the event-driven backend of a marketplace for musicians and gig organizers."""

__version__ = "0.1.0"
