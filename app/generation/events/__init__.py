"""Step 5: what watchers hear. The progress event bus and the observer hooks; both are
pure (no SQLAlchemy, no store), so any layer above may publish.
"""
