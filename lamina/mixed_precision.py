"""``keras.mixed_precision``: set a mixed policy globally (``set_global_policy('mixed_float16')``) and layers
created after it compute in float16 with float32 variables; ``compile`` then wraps the optimizer in a
LossScaleOptimizer, as Keras does. See lamina.config.DTypePolicy."""
from .config import DTypePolicy, dtype_policy, set_dtype_policy
from .optimizers import LossScaleOptimizer

__all__ = ["DTypePolicy", "Policy", "dtype_policy", "global_policy", "set_dtype_policy", "set_global_policy",
           "LossScaleOptimizer"]

Policy = DTypePolicy
global_policy = dtype_policy
set_global_policy = set_dtype_policy
