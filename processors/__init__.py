"""Stream processors: stages that turn records into records (registered by name)."""

from . import score, split  # noqa: F401  (register the stages)
