"""The pure domain: event taxonomy, journey policy, intent scoring, routing and guardrail timing.

Nothing here does I/O, so workflows, activities, the API and the store can all import it.
"""
