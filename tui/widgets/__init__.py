"""Reusable widgets: the virtual link list, the clients tree, the status line."""
