"""Tools: the registry, built-ins, the tool policy, approvals and the sandbox."""
