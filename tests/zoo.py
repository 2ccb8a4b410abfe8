"""Test helper: the model zoo (builders live in harmonizer_deploy.coverage.zoo, shared with `coverage --models`)."""

from harmonizer_deploy.coverage.zoo import COMPILE_DIMS, NEEDS_FIX_DIM, ZOO, save_zoo_model

__all__ = ["COMPILE_DIMS", "NEEDS_FIX_DIM", "ZOO", "save_zoo_model"]
