"""Step 6: what a successful run leaves: its files in one ZIP, on disk or in the
database, and the retention sweep that deletes old ones.
"""
