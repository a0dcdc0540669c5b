"""transfer-gateway: a budgeted, watched gateway in front of the AWS Transfer Family StopServer API."""

__version__ = "0.1.0"
