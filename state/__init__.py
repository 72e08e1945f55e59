"""Authoritative hot state in Redis: stock, reservations, idempotency, order records."""
