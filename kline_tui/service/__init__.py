"""The recorder as a service: its HTTP API (health, metrics, state, events, control), the client
an attached UI reads it through, and the glue to run it under systemd."""
