"""Temporal workflows (deterministic): the decision hub, the three journeys, the segment refresh."""

from workflows.hub import Hub
from workflows.journey import BackInStock, BrowseRecovery, CartRecovery, PriceDrop, Welcome
from workflows.segment_refresh import SegmentRefresh

ALL_WORKFLOWS = [Hub, CartRecovery, BrowseRecovery, Welcome, BackInStock, PriceDrop, SegmentRefresh]
