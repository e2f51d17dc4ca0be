"""riverbed: event-driven async workflows with typed, atomic, durable state."""
