"""Every workflow the worker serves. Kept out of `workflows/__init__.py`: the sandbox re-imports a
workflow's package with its module for every new workflow instance, and an `__init__` that loaded
every workflow made each hub and journey pay for all of them (issue 16: a fifth of the worker's
main thread at 600 events/s)."""

from workflows.hub import Hub
from workflows.journey import BackInStock, BrowseRecovery, CartRecovery, PriceDrop, Welcome
from workflows.segment_refresh import SegmentRefresh

ALL_WORKFLOWS = [Hub, CartRecovery, BrowseRecovery, Welcome, BackInStock, PriceDrop, SegmentRefresh]
