"""The upstream: Transfer Family through aiobotocore, and the credentials per account."""
