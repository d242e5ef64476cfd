"""Temporal workflows (deterministic): the decision hub and the three journeys."""

from workflows.hub import Hub
from workflows.journey import BrowseRecovery, CartRecovery, Welcome

ALL_WORKFLOWS = [Hub, CartRecovery, BrowseRecovery, Welcome]
