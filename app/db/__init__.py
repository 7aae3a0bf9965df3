"""Persistence: connections, migrations, and the registry of open databases."""
