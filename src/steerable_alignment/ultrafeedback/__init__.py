"""UltraFeedback data preparation (DESIGN.md §4), framework-free.

- :mod:`.generate`: the offline, generated UltraFeedback-shaped raw data set.
- :mod:`.prepare`: load a raw source into the normalised raw table and build
  the pairs table.
"""
