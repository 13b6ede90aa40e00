"""Stream processors: stages that turn records into records (registered by name)."""

from . import score, split  # noqa: F401  (register the stages)
from .caption import stage as _caption_stage  # noqa: F401  (registers `caption`)
from .geometry import annotate as _annotate_stage  # noqa: F401  (registers `annotate`)
