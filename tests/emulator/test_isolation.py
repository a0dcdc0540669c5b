"""Contract: the caller's account comes from the SigV4 access key and its region from the scope."""

from __future__ import annotations

import pytest

from gateway.emulator import Emulator
from tests.emulator.support import (
    ACCOUNT_A,
    ACCOUNT_B,
    DEFAULT_ACCOUNT,
    ClientFactory,
    aws_error,
)


class TestAccounts:
    async def test_twelve_digit_key_is_the_account(
        self, make_client: ClientFactory, emulator: Emulator
    ) -> None:
        """A 12-digit access key id acts as that account: its servers, its ARNs."""
        client = await make_client(emulator, ACCOUNT_A)
        server_id = (await client.create_server())["ServerId"]
        server = (await client.describe_server(ServerId=server_id))["Server"]
        assert server["Arn"] == f"arn:aws:transfer:us-east-1:{ACCOUNT_A}:server/{server_id}"
        assert emulator.server_state(server_id, account=ACCOUNT_A) == "STARTING"

    async def test_any_other_key_is_the_default_account(
        self, make_client: ClientFactory, emulator: Emulator
    ) -> None:
        """A key that is not 12 digits (e.g. AKIA...) is account 000000000000."""
        (server_id,) = emulator.create_servers(1)
        client = await make_client(emulator, "AKIAIOSFODNN7EXAMPLE")
        server = (await client.describe_server(ServerId=server_id))["Server"]
        assert f":{DEFAULT_ACCOUNT}:" in server["Arn"]

    async def test_one_account_never_sees_anothers_servers(
        self, make_client: ClientFactory, emulator: Emulator
    ) -> None:
        """B cannot list, describe, stop, start or delete A's server: it does not exist for B."""
        (server_id,) = emulator.create_servers(1, account=ACCOUNT_A)
        other = await make_client(emulator, ACCOUNT_B)
        assert (await other.list_servers())["Servers"] == []
        for call in (
            other.describe_server,
            other.stop_server,
            other.start_server,
            other.delete_server,
        ):
            error = await aws_error(call(ServerId=server_id))
            assert error["Error"]["Code"] == "ResourceNotFoundException"
        assert emulator.server_state(server_id, account=ACCOUNT_A) == "ONLINE"

    async def test_each_account_lists_only_its_own(
        self, make_client: ClientFactory, emulator: Emulator
    ) -> None:
        """Two accounts with servers each list exactly their own."""
        a_ids = emulator.create_servers(3, account=ACCOUNT_A)
        b_ids = emulator.create_servers(2, account=ACCOUNT_B)
        a = await make_client(emulator, ACCOUNT_A)
        b = await make_client(emulator, ACCOUNT_B)
        assert sorted(s["ServerId"] for s in (await a.list_servers())["Servers"]) == sorted(a_ids)
        assert sorted(s["ServerId"] for s in (await b.list_servers())["Servers"]) == sorted(b_ids)


class TestRegions:
    async def test_region_comes_from_the_credential_scope(
        self, make_client: ClientFactory, emulator: Emulator
    ) -> None:
        """A client of eu-west-1 creates servers in eu-west-1 with an eu-west-1 ARN."""
        client = await make_client(emulator, ACCOUNT_A, "eu-west-1")
        server_id = (await client.create_server())["ServerId"]
        server = (await client.describe_server(ServerId=server_id))["Server"]
        assert server["Arn"].startswith(f"arn:aws:transfer:eu-west-1:{ACCOUNT_A}:")
        assert emulator.server_state(server_id, ACCOUNT_A, "eu-west-1") == "STARTING"
        with pytest.raises(KeyError):
            emulator.server_state(server_id, ACCOUNT_A, "us-east-1")

    async def test_one_region_never_sees_anothers_servers(
        self, make_client: ClientFactory, emulator: Emulator
    ) -> None:
        """The same account in another region sees none of the first region's servers."""
        (server_id,) = emulator.create_servers(1, account=ACCOUNT_A, region="us-east-1")
        west = await make_client(emulator, ACCOUNT_A, "eu-west-1")
        assert (await west.list_servers())["Servers"] == []
        error = await aws_error(west.describe_server(ServerId=server_id))
        assert error["Error"]["Code"] == "ResourceNotFoundException"

    async def test_server_state_of_unknown_scope_is_key_error(self, emulator: Emulator) -> None:
        """The Python API raises KeyError for a server outside the given account/region."""
        (server_id,) = emulator.create_servers(1, account=ACCOUNT_A)
        with pytest.raises(KeyError):
            emulator.server_state(server_id, account=ACCOUNT_B)
