"""Generation: model registry, intent inference, and (later) copy, briefs and banners. Knows nothing of rewards."""

import os

# PyTorch's OpenMP threads spin while they wait for work. The dashboard runs model calls from several session
# threads at once (each with its own thread team) and shares cores with other processes, and spinning teams then
# starve the threads doing the work: batched generation measured up to 30x slower. Sleeping waiters cost
# microseconds. OpenMP reads this when torch loads, so it is set here, before any module of this package imports
# torch; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
