"""Adapters of the outbound ports: notifications, analytics, payments."""
