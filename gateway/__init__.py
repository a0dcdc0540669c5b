"""transfer-gateway: a budgeted, watched gateway in front of Transfer Family's StopServer."""

__version__ = "0.1.0"
