"""Model families, one file each, and the registry of named models (``course.models.build("small_cnn")``)."""
from course.models import simple, stn  # noqa: F401  (registers their models)
from course.models import resnet  # noqa: F401  (registers its models)
from course.models import inception  # noqa: F401  (registers its models)
from course.models.registry import REGISTRY, ModelSpec, UnknownModelError, build, get_spec, register

__all__ = ["REGISTRY", "ModelSpec", "UnknownModelError", "build", "get_spec", "register"]
