"""Sources Breadcrumb connects to natively (Shopify)."""
