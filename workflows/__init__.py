"""Temporal workflows (deterministic): the decision hub and the three journeys."""

from workflows.hub import Hub
from workflows.journey import BackInStock, BrowseRecovery, CartRecovery, PriceDrop, Welcome

ALL_WORKFLOWS = [Hub, CartRecovery, BrowseRecovery, Welcome, BackInStock, PriceDrop]
