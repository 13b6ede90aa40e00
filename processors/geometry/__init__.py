"""Pure geometry of annotation: pose conventions, trajectory metrics, motion instructions.

Arrays in, numbers out; no I/O and no models (SPEC.md §3, §4). Conventions are in
:mod:`.poses` (OpenCV camera axes; ``poses.npy`` rows are w2c ``[t, qx, qy, qz, qw]``).
"""

from .instructions import (
    COMMANDS,
    BasicInstructionConfig,
    EnhancedInstructionConfig,
    instruction_summary,
    motion_instructions,
    motion_instructions_batch,
)
from .metrics import (
    MetricsConfig,
    TrajectoryMetrics,
    TrajectoryMetricsBatch,
    dynamic_ratio,
    trajectory_metrics,
    trajectory_metrics_batch,
)
from .poses import (
    camera_centers,
    c2w_to_poses7,
    normalize_intrinsics,
    poses7_from_c2w,
    poses7_to_c2w,
    poses7_to_w2c,
)

__all__ = [
    "COMMANDS",
    "BasicInstructionConfig",
    "EnhancedInstructionConfig",
    "MetricsConfig",
    "TrajectoryMetrics",
    "TrajectoryMetricsBatch",
    "camera_centers",
    "c2w_to_poses7",
    "dynamic_ratio",
    "instruction_summary",
    "motion_instructions",
    "motion_instructions_batch",
    "normalize_intrinsics",
    "poses7_from_c2w",
    "poses7_to_c2w",
    "poses7_to_w2c",
    "trajectory_metrics",
    "trajectory_metrics_batch",
]
