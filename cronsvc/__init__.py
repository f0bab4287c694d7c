"""cronsvc: a dynamic cron service that calls webhooks on schedule."""

__version__ = "0.1.0"
