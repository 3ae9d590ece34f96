"""Running kernel plans on a GPU without TVM (cuda-python driver API)."""
