"""Compiled kernels: pure compute on typed memoryviews, no validation (see fastconv.functional)."""
