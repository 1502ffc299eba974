"""Telling other systems what happened to a job: signed webhooks delivered from a durable
outbox.
"""
