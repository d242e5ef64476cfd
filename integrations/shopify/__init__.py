"""Shopify as a first-class source: signed webhooks (api/shopify.py) mapped onto the store (mapping.py)."""
