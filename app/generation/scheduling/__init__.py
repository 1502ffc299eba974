"""Step 2: the scheduling policy, the order queued jobs start in. Pure: it imports
the job vocabulary and nothing else of the core (tests/test_layout.py).
"""
