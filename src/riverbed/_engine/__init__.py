"""The engine: one scheduler per run, routing by a table computed once per workflow class.

Private: nothing here is public API. ``riverbed.workflow`` and ``riverbed.context`` are the
doors in.
"""
