"""Kalman filtering, smoothing and sensitivities: pure functions over series."""
