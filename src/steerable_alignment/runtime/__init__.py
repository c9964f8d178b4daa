"""Where code runs: devices and dtypes, data-parallel processes, the memory a run takes.

The lowest layer with :mod:`steerable_alignment.splits` (docs/architecture.md):
it imports nothing else of the project. Left empty so that importing a
submodule stays cheap.
"""
