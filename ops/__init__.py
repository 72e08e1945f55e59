"""Operations: CLI, local stack launcher, load generator, ops web API."""
