"""Widgets of the main screen and the details view."""
