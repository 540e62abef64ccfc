"""Import: a real stdio MCP server (tests/support/mcp_tools_server.py, started by the
import from its command) and an OpenAI tool list become domain files that load."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from flywheel_assets.cli_domain import main as domain_cli
from flywheel_assets.domain_import import DomainImportError, import_openai
from flywheel_assets.world.domain_files import load_domain_file, summary

SERVER = Path(__file__).resolve().parent / "support" / "mcp_tools_server.py"
SERVER_COMMAND = f"{shlex.quote(sys.executable)} {shlex.quote(str(SERVER))}"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("import") / "library.yaml"
    assert domain_cli(["domain", "import", "--mcp", SERVER_COMMAND, "--out", str(out)]) == 0
    return out


def test_an_mcp_servers_tools_become_a_domain_file_that_loads(imported: Path):
    facts = summary(load_domain_file(imported))
    assert facts["name"] == "city_library"  # the server's name
    # readOnlyHint true -> read; false -> write; no hint -> by the name's prefix
    assert facts["reads"] == ["get_book", "member_loans", "search_catalogue"]
    assert facts["writes"] == ["borrow_book", "renew_loan"]
    assert facts["llm_simulated"] == ["get_book", "member_loans", "search_catalogue", "borrow_book", "renew_loan"]


def test_the_imported_file_keeps_schemas_policy_and_says_how_access_was_decided(imported: Path):
    text = imported.read_text()
    assert "  # access: write (readOnlyHint: false)\n  - name: borrow_book" in text
    assert "  # access: write (no readOnlyHint; by name: reads start with get_, list_, find_, search_)\n" \
           "  - name: renew_loan" in text
    document = yaml.safe_load(text)
    assert document["policy"] == "Members may borrow at most three books at a time.\n"  # the server's instructions
    renew = next(t for t in document["tools"] if t["name"] == "renew_loan")
    assert renew["parameters"]["required"] == ["member_id", "book_id"]
    assert renew["parameters"]["properties"]["weeks"]["default"] == 2
    assert list(renew["changes"]) == ["records"]


def test_an_existing_file_is_not_overwritten(imported: Path, capsys: pytest.CaptureFixture[str]):
    before = imported.read_text()
    assert domain_cli(["domain", "import", "--mcp", SERVER_COMMAND, "--out", str(imported)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert imported.read_text() == before


def test_a_command_that_does_not_start_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "x.yaml"
    assert domain_cli(["domain", "import", "--mcp", "no-such-mcp-server --flag", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flywheel domain import: cannot start the MCP server `no-such-mcp-server --flag`")
    assert not out.exists()


OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "get_shipment", "description": "A shipment's status.",
                                      "parameters": {"type": "object", "properties": {"id": {"type": "string"}},
                                                     "required": ["id"]}}},
    {"name": "reroute_shipment", "description": "Send a shipment to another depot.",
     "parameters": {"type": "object", "properties": {"id": {"type": "string"}, "depot": {"type": "string"}}}},
]


def test_an_openai_tool_list_and_a_policy_become_a_domain_file(tmp_path: Path):
    tools, policy = tmp_path / "tools.json", tmp_path / "policy.md"
    tools.write_text(json.dumps({"tools": OPENAI_TOOLS}))
    policy.write_text("- A shipment can be rerouted only before it leaves the depot.\n")
    out = tmp_path / "Freight Desk.yaml"
    assert domain_cli(["domain", "import", "--openai-tools", str(tools), "--policy", str(policy),
                       "--out", str(out)]) == 0
    domain_file = load_domain_file(out)
    assert domain_file.name == "freight_desk"
    assert domain_file.policy == policy.read_text()
    assert (summary(domain_file)["reads"], summary(domain_file)["writes"]) == (["get_shipment"], ["reroute_shipment"])


def test_an_invalid_openai_tool_list_writes_nothing(tmp_path: Path):
    tools, policy, out = tmp_path / "tools.json", tmp_path / "policy.md", tmp_path / "bad.yaml"
    broken = json.loads(json.dumps(OPENAI_TOOLS))
    broken[1]["parameters"]["properties"]["depot"]["type"] = "place"
    tools.write_text(json.dumps(broken))
    policy.write_text("- Be careful.\n")
    with pytest.raises(DomainImportError, match=r"tools\[1\]\.parameters\.properties\.depot\.type: not a JSON Schema"):
        import_openai(tools, policy, out)
    assert not out.exists()
    tools.write_text(json.dumps([{"type": "function"}]))
    with pytest.raises(DomainImportError, match=r"\[0\]: not an OpenAI tool"):
        import_openai(tools, policy, out)


def test_import_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert domain_cli(["domain", "import", "--out", str(tmp_path / "x.yaml")]) == 2
    assert "exactly one of --openai-tools" in capsys.readouterr().err
    assert domain_cli(["domain", "import", "--openai-tools", "t.json", "--out", str(tmp_path / "x.yaml")]) == 2
    assert "needs --policy" in capsys.readouterr().err
