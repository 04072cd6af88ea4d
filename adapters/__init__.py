"""The outside world: HTTP (falcon), the event-store configuration and the command line."""
