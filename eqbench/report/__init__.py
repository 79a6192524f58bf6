"""Paper-style tables and plots from sweeps."""
