"""Screens over the main view: the add dialog, a stream's details, help."""
