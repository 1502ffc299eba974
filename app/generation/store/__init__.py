"""Under every step: the database. Tables, the engine, the schema and its migrations,
the job repository's reads and writes, and PostgreSQL's notifications.
"""
