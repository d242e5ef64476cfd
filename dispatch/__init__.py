"""The outbox dispatcher and the Temporal connection (client, payload codec): store → Temporal.

Used by the API process, the worker and the CLI; it imports neither `api` nor `worker`."""
