"""Durable job queue with leases: the store (no HTTP) and the worker loop."""
