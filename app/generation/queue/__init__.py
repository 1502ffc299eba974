"""Step 3: where accepted jobs wait, and the claim that takes the next one. One
contract (contract.py) with its contract suite, two backends (memory, postgres).
"""
