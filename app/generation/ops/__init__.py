"""The operators' side of the service, above every step of a job's life: what operators
read and what they do. `stats.py` holds the figures `/status` reports; `operations.py`
ties together the rest for one service: this process in the registry of services
(`registry.py`), the queue's history (`history.py`), the console's snapshot
(`console.py`), the actions beyond pause and cancel (`steering.py`) and the idle stop
(`idle.py`)."""
