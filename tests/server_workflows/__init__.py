"""Workflow modules the server tests serve (``server_workflows.*``, tests/ is on the path)."""
