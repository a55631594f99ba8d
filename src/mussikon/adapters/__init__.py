"""Adapters of the ports: stores, transports, notifications, payments, clocks."""
