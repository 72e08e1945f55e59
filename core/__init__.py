"""The foundation floor: settings, client security, logging and masking, Kafka helpers,
retry/backoff, heartbeats, access policy, probes and metrics rendering. Imports nothing of
the project, so every other package may use it."""
