"""The reference machine behind ``qmonitor run``: an application of the public API only."""
