"""Topic catalogue, canonical pydantic models and channel adapters."""
