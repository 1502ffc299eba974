"""Step 4: running a job. Worker threads claim from the queue, a runner drives the
generator (in a child process when CPU-bound), leases keep the claim, one outcome is
recorded, and the relay carries events to the other processes.
"""
