"""Temporal workflows (deterministic): the decision hub, the journeys, the segment refresh; the list
the worker serves is `workflows.registry.ALL_WORKFLOWS`."""
