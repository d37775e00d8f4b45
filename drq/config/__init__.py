"""The run's configuration: its schema (every key declared once), the one-line errors, the launcher and machine checks, the protocol line."""
