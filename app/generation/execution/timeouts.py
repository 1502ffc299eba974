"""Grace periods that the service and the code that stops it (app/drain.py) share."""

# How long interrupted jobs get to reach a checkpoint once a shutdown asks them to stop.
SHUTDOWN_GRACE_SECONDS = 5.0
