"""Contract: TagResource, UntagResource, ListTagsForResource and CreateServer's Tags, over a real
socket with aiobotocore, with the same quotas as every other operation."""

from __future__ import annotations

from typing import Any

from gateway.emulator import Emulator
from tests.emulator.support import ACCOUNT_A, ClientFactory, EmulatorFactory, aws_error


def _arn(server_id: str, account: str = "000000000000", region: str = "us-east-1") -> str:
    return f"arn:aws:transfer:{region}:{account}:server/{server_id}"


class TestTags:
    async def test_create_server_tags_are_listed(self, client: Any) -> None:
        """Tags given to CreateServer come back from ListTagsForResource, with the ARN."""
        server_id = (await client.create_server(Tags=[{"Key": "team", "Value": "ops"}]))["ServerId"]
        answer = await client.list_tags_for_resource(Arn=_arn(server_id))
        assert answer["Arn"] == _arn(server_id)
        assert answer["Tags"] == [{"Key": "team", "Value": "ops"}]

    async def test_tag_adds_and_overwrites_untag_removes(self, client: Any) -> None:
        """TagResource adds new keys and overwrites existing ones; UntagResource removes keys
        (a key not there is no error)."""
        server_id = (await client.create_server(Tags=[{"Key": "team", "Value": "ops"}]))["ServerId"]
        arn = _arn(server_id)
        await client.tag_resource(
            Arn=arn, Tags=[{"Key": "team", "Value": "sre"}, {"Key": "env", "Value": "prod"}]
        )
        tags = {
            t["Key"]: t["Value"] for t in (await client.list_tags_for_resource(Arn=arn))["Tags"]
        }
        assert tags == {"team": "sre", "env": "prod"}
        await client.untag_resource(Arn=arn, TagKeys=["team", "absent"])
        assert (await client.list_tags_for_resource(Arn=arn))["Tags"] == [
            {"Key": "env", "Value": "prod"}
        ]

    async def test_tags_page_by_max_results(self, client: Any) -> None:
        """ListTagsForResource pages by MaxResults with a NextToken, every tag once."""
        server_id = (await client.create_server())["ServerId"]
        arn = _arn(server_id)
        await client.tag_resource(Arn=arn, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(5)])
        first = await client.list_tags_for_resource(Arn=arn, MaxResults=3)
        assert len(first["Tags"]) == 3
        second = await client.list_tags_for_resource(
            Arn=arn, MaxResults=3, NextToken=first["NextToken"]
        )
        assert "NextToken" not in second
        assert [t["Key"] for t in first["Tags"] + second["Tags"]] == [f"k{i}" for i in range(5)]

    async def test_another_accounts_arn_is_not_found(
        self, make_client: ClientFactory, emulator: Emulator
    ) -> None:
        """An ARN of a server in another account is ResourceNotFoundException, as on AWS."""
        (server_id,) = emulator.create_servers(1, tags={"team": "ops"})
        other = await make_client(emulator, ACCOUNT_A)
        error = await aws_error(other.list_tags_for_resource(Arn=_arn(server_id)))
        assert error["Error"]["Code"] == "ResourceNotFoundException"

    async def test_more_than_50_tags_is_refused(self, client: Any) -> None:
        """A resource holds at most 50 tags: more is InvalidRequestException."""
        server_id = (await client.create_server())["ServerId"]
        arn = _arn(server_id)
        await client.tag_resource(Arn=arn, Tags=[{"Key": f"a{i}", "Value": "v"} for i in range(40)])
        error = await aws_error(
            client.tag_resource(Arn=arn, Tags=[{"Key": f"b{i}", "Value": "v"} for i in range(11)])
        )
        assert error["Error"]["Code"] == "InvalidRequestException"

    async def test_bulk_created_servers_carry_their_tags(self, emulator: Emulator) -> None:
        """Emulator.create_servers(tags=...) tags every server it makes (what tests select on)."""
        ids = emulator.create_servers(3, tags={"fleet": "blue"})
        for server_id in ids:
            record = emulator.store.get("000000000000", "us-east-1", server_id)
            assert dict(record.tags) == {"fleet": "blue"}


class TestTagQuotas:
    async def test_list_tags_is_throttled_like_every_operation(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """ListTagsForResource has its own per-account quota bucket: past the burst (clock
        still) it answers ThrottlingException."""
        emulator = await make_emulator(quota_rate=1.0, quota_burst=2)
        client = await make_client(emulator)
        (server_id,) = emulator.create_servers(1)
        for _ in range(2):
            await client.list_tags_for_resource(Arn=_arn(server_id))
        error = await aws_error(client.list_tags_for_resource(Arn=_arn(server_id)))
        assert error["Error"]["Code"] == "ThrottlingException"
        assert emulator.throttled("ListTagsForResource") == 1
