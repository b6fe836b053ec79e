"""reusevos: semi-supervised video object segmentation with a learned reuse gate."""

from reusevos.errors import ReusevosError

__version__ = "0.1.0"

__all__ = ["ReusevosError", "__version__"]
