"""Small workflows the CLI tests load by spec (``tests/cli_workflows/flows.py:NAME``)."""
