"""Helper modules and subprocess scripts for the store tests (not collected)."""
