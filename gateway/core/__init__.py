"""The core: operations as flights, watching, the retry policy, coordination, validation."""
