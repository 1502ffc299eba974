"""What operators read about the service: the figures `/status` reports."""
