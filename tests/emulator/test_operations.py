"""Contract: every operation over a real socket with aiobotocore, parsed the way AWS's are."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.emulator import Emulator
from tests.emulator.support import ACCOUNT_A, DEFAULT_ACCOUNT, UNKNOWN_ID, ClientFactory, aws_error

SERVER_ID = re.compile(r"s-[0-9a-f]{17}\Z")


class TestCreateServer:
    async def test_returns_a_model_shaped_id(self, client: Any) -> None:
        """CreateServer answers a ServerId of `s-` and 17 lower-case hex digits."""
        created = await client.create_server()
        assert SERVER_ID.match(created["ServerId"])

    async def test_new_server_is_starting_then_online(
        self, client: Any, clock: ManualClock
    ) -> None:
        """A new server is STARTING for transition_seconds, then ONLINE."""
        server_id = (await client.create_server())["ServerId"]
        assert (await client.describe_server(ServerId=server_id))["Server"]["State"] == "STARTING"
        await clock.advance(5.0)
        assert (await client.describe_server(ServerId=server_id))["Server"]["State"] == "ONLINE"

    async def test_keeps_the_members_it_was_given(self, client: Any) -> None:
        """Domain, EndpointType, IdentityProviderType, Protocols and Tags show up in Describe."""
        server_id = (
            await client.create_server(
                Domain="EFS",
                EndpointType="VPC",
                IdentityProviderType="AWS_LAMBDA",
                Protocols=["SFTP", "FTPS"],
                Tags=[{"Key": "team", "Value": "storage"}],
                LoggingRole="arn:aws:iam::111111111111:role/logs",
            )
        )["ServerId"]
        server = (await client.describe_server(ServerId=server_id))["Server"]
        assert server["Domain"] == "EFS"
        assert server["EndpointType"] == "VPC"
        assert server["IdentityProviderType"] == "AWS_LAMBDA"
        assert server["Protocols"] == ["SFTP", "FTPS"]
        assert server["Tags"] == [{"Key": "team", "Value": "storage"}]
        assert server["LoggingRole"] == "arn:aws:iam::111111111111:role/logs"

    async def test_bad_enum_is_a_validation_error(
        self, make_client: ClientFactory, emulator: Emulator
    ) -> None:
        """An EndpointType outside the model's enum answers ValidationException naming it."""
        raw = await make_client(emulator, validate=False)
        error = await aws_error(raw.create_server(EndpointType="NOPE"))
        assert error["Error"]["Code"] == "ValidationException"
        assert "'endpointType'" in error["Error"]["Message"]
        assert emulator.store.count(DEFAULT_ACCOUNT, "us-east-1") == 0


class TestDescribeServer:
    async def test_describes_a_server_with_its_arn(self, client: Any, emulator: Emulator) -> None:
        """Describe answers the DescribedServer with the real ARN format and the state."""
        (server_id,) = emulator.create_servers(1)
        server = (await client.describe_server(ServerId=server_id))["Server"]
        assert server["Arn"] == f"arn:aws:transfer:us-east-1:{DEFAULT_ACCOUNT}:server/{server_id}"
        assert server["ServerId"] == server_id
        assert server["State"] == "ONLINE"
        assert server["Domain"] == "S3"
        assert server["EndpointType"] == "PUBLIC"
        assert server["IdentityProviderType"] == "SERVICE_MANAGED"

    async def test_unknown_server_is_resource_not_found_with_modeled_fields(
        self, client: Any
    ) -> None:
        """Unknown id: 400 ResourceNotFoundException; botocore lifts Resource and ResourceType."""
        error = await aws_error(client.describe_server(ServerId=UNKNOWN_ID))
        assert error["Error"]["Code"] == "ResourceNotFoundException"
        assert UNKNOWN_ID in error["Error"]["Message"]
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        # botocore puts a modeled error's members at the top level of the response.
        assert error["Resource"] == UNKNOWN_ID
        assert error["ResourceType"] == "Server"

    async def test_modeled_exception_class_is_raised(self, client: Any) -> None:
        """botocore maps the code to the client's modeled exception class."""
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await client.describe_server(ServerId=UNKNOWN_ID)

    async def test_every_answer_has_a_uuid4_request_id(self, client: Any) -> None:
        """Success and error answers both carry x-amzn-RequestId, a uuid4 botocore reports."""
        ok = await client.list_servers()
        error = await aws_error(client.describe_server(ServerId=UNKNOWN_ID))
        ids = [ok["ResponseMetadata"]["RequestId"], error["ResponseMetadata"]["RequestId"]]
        assert all(uuid.UUID(i).version == 4 for i in ids)
        assert ids[0] != ids[1]


class TestListServers:
    async def test_lists_listed_server_items(self, client: Any, emulator: Emulator) -> None:
        """Each item has Arn (the model's only required member), ServerId, State and the rest."""
        (server_id,) = emulator.create_servers(1, state="OFFLINE")
        (item,) = (await client.list_servers())["Servers"]
        assert item["Arn"].endswith(f":server/{server_id}")
        assert item["ServerId"] == server_id
        assert item["State"] == "OFFLINE"
        assert {"Domain", "EndpointType", "IdentityProviderType"} <= item.keys()

    async def test_empty_account_lists_nothing_without_token(self, client: Any) -> None:
        """No servers: an empty list and no NextToken."""
        page = await client.list_servers()
        assert page["Servers"] == []
        assert "NextToken" not in page

    async def test_25_servers_by_10_are_three_pages_with_every_id_once(
        self, client: Any, emulator: Emulator
    ) -> None:
        """MaxResults 10 over 25 servers: pages of 10, 10, 5; the last has no NextToken."""
        created = set(emulator.create_servers(25))
        sizes: list[int] = []
        seen: list[str] = []
        kwargs: dict[str, Any] = {"MaxResults": 10}
        for _ in range(10):  # 3 pages expected: a token that loops fails the test
            page = await client.list_servers(**kwargs)
            sizes.append(len(page["Servers"]))
            seen += [s["ServerId"] for s in page["Servers"]]
            if "NextToken" not in page:
                break
            kwargs["NextToken"] = page["NextToken"]
        assert sizes == [10, 10, 5]
        assert sorted(seen) == sorted(created)

    async def test_botocore_paginator_walks_all_pages(
        self, client: Any, emulator: Emulator
    ) -> None:
        """botocore's ListServers paginator (NextToken/MaxResults) sees every server once."""
        created = emulator.create_servers(25)
        paginator = client.get_paginator("list_servers")
        seen = [
            s["ServerId"]
            async for page in paginator.paginate(PaginationConfig={"PageSize": 7})
            for s in page["Servers"]
        ]
        assert sorted(seen) == sorted(created)

    async def test_deleting_between_pages_neither_repeats_nor_skips_the_rest(
        self, client: Any, emulator: Emulator
    ) -> None:
        """The token is a position, not an offset: deleting seen servers keeps paging exact."""
        created = emulator.create_servers(20)
        first = await client.list_servers(MaxResults=10)
        first_ids = [s["ServerId"] for s in first["Servers"]]
        for server_id in first_ids[:5]:
            await client.delete_server(ServerId=server_id)
        second = await client.list_servers(MaxResults=10, NextToken=first["NextToken"])
        assert sorted(first_ids + [s["ServerId"] for s in second["Servers"]]) == sorted(created)

    async def test_garbage_token_is_invalid_next_token(self, client: Any) -> None:
        """A token the emulator did not issue answers InvalidNextTokenException (400)."""
        error = await aws_error(client.list_servers(NextToken="not-a-token"))
        assert error["Error"]["Code"] == "InvalidNextTokenException"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400

    async def test_token_of_another_account_is_refused(
        self, make_client: ClientFactory, emulator: Emulator
    ) -> None:
        """A NextToken is bound to the account that got it: another cannot page with it."""
        emulator.create_servers(3, account=ACCOUNT_A)
        owner = await make_client(emulator, ACCOUNT_A)
        other = await make_client(emulator, DEFAULT_ACCOUNT)
        token = (await owner.list_servers(MaxResults=1))["NextToken"]
        error = await aws_error(other.list_servers(MaxResults=1, NextToken=token))
        assert error["Error"]["Code"] == "InvalidNextTokenException"


class TestStartStopDelete:
    async def test_stop_answers_empty_200_and_stops(
        self, client: Any, emulator: Emulator, clock: ManualClock
    ) -> None:
        """StopServer: HTTP 200 with no output; the server goes STOPPING, then OFFLINE."""
        (server_id,) = emulator.create_servers(1)
        answer = await client.stop_server(ServerId=server_id)
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert set(answer) == {"ResponseMetadata"}
        assert emulator.server_state(server_id) == "STOPPING"
        await clock.advance(5.0)
        assert emulator.server_state(server_id) == "OFFLINE"

    async def test_start_answers_empty_200_and_starts(
        self, client: Any, emulator: Emulator, clock: ManualClock
    ) -> None:
        """StartServer on OFFLINE: 200, STARTING, then ONLINE."""
        (server_id,) = emulator.create_servers(1, state="OFFLINE")
        answer = await client.start_server(ServerId=server_id)
        assert set(answer) == {"ResponseMetadata"}
        assert emulator.server_state(server_id) == "STARTING"
        await clock.advance(5.0)
        assert emulator.server_state(server_id) == "ONLINE"

    async def test_delete_removes_the_server(self, client: Any, emulator: Emulator) -> None:
        """DeleteServer: 200, then the server is unknown to Describe, Stop and List."""
        (server_id,) = emulator.create_servers(1)
        await client.delete_server(ServerId=server_id)
        for call in (client.describe_server, client.stop_server, client.delete_server):
            error = await aws_error(call(ServerId=server_id))
            assert error["Error"]["Code"] == "ResourceNotFoundException"
        assert (await client.list_servers())["Servers"] == []

    @pytest.mark.parametrize("operation", ["stop_server", "start_server", "delete_server"])
    async def test_unknown_server_is_resource_not_found(self, client: Any, operation: str) -> None:
        """Start, Stop and Delete of an unknown id: ResourceNotFoundException with Resource."""
        error = await aws_error(getattr(client, operation)(ServerId=UNKNOWN_ID))
        assert error["Error"]["Code"] == "ResourceNotFoundException"
        assert error["Resource"] == UNKNOWN_ID
        assert error["ResourceType"] == "Server"
