"""Pydantic models of the front doors' bodies: they validate what clients send and generate the
OpenAPI schema of /docs, so the shape is written once."""
