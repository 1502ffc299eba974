"""Step 1 of a job's life: a submission taken in. Who may ask for what (keys, tiers,
quotas), the durable row, and the job's first forecast.

Imports go down only (tests/test_layout.py): this folder may use the queue, the store,
the forecast, the events and the vocabulary, never execution or the service.
"""
