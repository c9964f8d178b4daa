"""Where code runs: devices and dtypes, and the processes of a data-parallel launch.

The lowest layer with :mod:`steerable_alignment.splits` (docs/architecture.md):
it imports nothing else of the project. Left empty so that importing a
submodule stays cheap.
"""
