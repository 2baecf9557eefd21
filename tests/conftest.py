"""Shared fixtures; the emulator fixtures come from the bcbridge.testing plugin."""
