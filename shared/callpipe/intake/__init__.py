"""The intake step: verify, map and queue CallRail webhooks."""
