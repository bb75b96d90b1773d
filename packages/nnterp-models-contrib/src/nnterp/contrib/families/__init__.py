"""Contrib architecture specs, one module per naming family."""
