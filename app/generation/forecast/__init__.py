"""Positions and ETAs: the scheduling policy played forward on a copy of the queue,
and run times learned from finished jobs. Imports neither SQLAlchemy nor the store.
"""
