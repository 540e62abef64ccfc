"""Domain files from tools that already exist: an OpenAI tool list (plus a policy written
in markdown) or a running MCP server (its tools and their schemas, listed over stdio).

Neither source says what a tool changes, and an OpenAI tool list does not even say whether
it writes, so the file written says how each ``access`` was decided, and every write's
``changes`` names one placeholder collection (``records``) until the user declares real
entities. The written file is validated with ``load_domain_file`` before it is written, and
an existing file is never overwritten unless asked.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import yaml

from flywheel_assets.world.domain_files import DomainFile, DomainFileError, domain_file_from_data

READ_PREFIXES = ("get_", "list_", "find_", "search_")
"""A tool with no read-only annotation is a read when its name starts with one of these."""
PLACEHOLDER_COLLECTION = "records"
PLACEHOLDER_POLICY = ("(Write the policy here: the conditions under which each write is allowed, "
                      "what must be verified first, what must never be disclosed.)\n")
MCP_TIMEOUT_S = 60.0


class DomainImportError(ValueError):
    """The source cannot become a domain file (the message names the source and the place)."""


def access_by_name(name: str) -> str:
    return "read" if name.startswith(READ_PREFIXES) else "write"


def domain_name(text: str) -> str:
    """A valid domain name from a file stem or server name: ``My-Tools v2`` -> ``my_tools_v2``."""
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return name if re.match(r"^[a-z]", name) else f"domain_{name}" if name else "domain"


def _tool_document(name: str, description: str, parameters: dict[str, Any] | None, access: str,
                   output: str = "") -> dict[str, Any]:
    document: dict[str, Any] = {"name": name, "description": description, "access": access,
                                "parameters": parameters or {"type": "object", "properties": {}}}
    if output:
        document["output"] = output
    if access == "write":
        document["changes"] = {PLACEHOLDER_COLLECTION: f"what {name} changes (imported: describe it)"}
    return document


def read_openai_tools(path: str | Path) -> list[dict[str, Any]]:
    """The function objects of an OpenAI tool list: ``[{"type": "function", "function":
    {...}}, ...]``, bare function objects, or either under a ``"tools"`` key."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DomainImportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise DomainImportError(f"{path}: line {exc.lineno}: not JSON: {exc.msg}") from None
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list) or not data:
        raise DomainImportError(f"{path}: expected a non-empty list of OpenAI tools")
    functions = []
    for index, entry in enumerate(data):
        function = entry.get("function", entry) if isinstance(entry, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise DomainImportError(f"{path}: [{index}]: not an OpenAI tool (needs function.name)")
        functions.append(function)
    return functions


def from_openai_tools(functions: Sequence[dict[str, Any]], *, name: str, policy: str, description: str = ""
                      ) -> tuple[dict[str, Any], list[str]]:
    """The domain document and one comment line per tool (how its access was decided)."""
    tools, notes = [], []
    for function in functions:
        access = access_by_name(function["name"])
        tools.append(_tool_document(function["name"], function.get("description") or function["name"],
                                    function.get("parameters"), access))
        notes.append(f"access: {access} (by name: reads start with {', '.join(READ_PREFIXES)})")
    return {"name": name, "description": description or name.replace("_", " "), "policy": policy,
            "tools": tools}, notes


async def list_mcp_tools(command: str, timeout_s: float = MCP_TIMEOUT_S) -> tuple[str, str, list[Any]]:
    """(server name, its instructions, its tools) from the MCP server ``command`` starts (stdio)."""
    from mcp import Client, StdioServerParameters

    argv = shlex.split(command)
    if not argv:
        raise DomainImportError("--mcp: empty command")
    tools: list[Any] = []
    try:
        with anyio.fail_after(timeout_s):
            async with Client(StdioServerParameters(command=argv[0], args=argv[1:])) as client:
                cursor = None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                info = client.server_info
                return (info.name if info else argv[0]), (client.instructions or ""), tools
    except TimeoutError:
        raise DomainImportError(f"the MCP server `{command}` listed no tools within {timeout_s:.0f} s") from None
    except OSError as exc:
        raise DomainImportError(f"cannot start the MCP server `{command}`: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 (a server that dies or speaks something else)
        detail = exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) and exc.exceptions else exc
        raise DomainImportError(f"the MCP server `{command}` failed: {type(detail).__name__}: {detail}") from None


def from_mcp_tools(tools: Sequence[Any], *, name: str, policy: str, description: str = ""
                   ) -> tuple[dict[str, Any], list[str]]:
    """The domain document from MCP tools: ``annotations.readOnlyHint`` decides access where
    the server gives it, the name otherwise."""
    documents, notes = [], []
    for tool in tools:
        hint = tool.annotations.read_only_hint if tool.annotations is not None else None
        if hint is None:
            access = access_by_name(tool.name)
            notes.append(f"access: {access} (no readOnlyHint; by name: reads start with {', '.join(READ_PREFIXES)})")
        else:
            access = "read" if hint else "write"
            notes.append(f"access: {access} (readOnlyHint: {str(hint).lower()})")
        output = f"JSON matching {json.dumps(tool.output_schema, sort_keys=True)}" if tool.output_schema else ""
        documents.append(_tool_document(tool.name, tool.description or tool.title or tool.name.replace("_", " "),
                                        tool.input_schema, access, output))
    return {"name": name, "description": description or name.replace("_", " "), "policy": policy,
            "tools": documents}, notes


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line text (the policy) as a literal block, readable and editable as written
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def render(document: dict[str, Any], notes: Sequence[str], header: Sequence[str]) -> str:
    """YAML with ``header`` as leading comments and each tool preceded by its note."""
    head = {k: v for k, v in document.items() if k != "tools"}
    lines = [f"# {line}" if line else "#" for line in header]
    text = "\n".join(lines) + "\n" + yaml.dump(head, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    text += "tools:\n"
    for tool, note in zip(document["tools"], notes):
        block = yaml.dump([tool], Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
        text += f"  # {note}\n" + "".join(f"  {line}\n" for line in block.splitlines())
    return text


def header_lines(source: str, count: int) -> list[str]:
    return [
        f"Imported by `flywheel domain import` from {source} ({count} tools).",
        "Each tool's comment says how its access (read or write) was decided: check them.",
        "No tool has a Python implementation, so an LLM tool backend simulates them all. Each",
        f"write's `changes` names the placeholder collection `{PLACEHOLDER_COLLECTION}`: declare `entities:`",
        "(and seed `records:`) and name the collections each write really changes.",
        "Validate edits with `flywheel domain check FILE`.",
    ]


def write_domain_file(document: dict[str, Any], notes: Sequence[str], header: Sequence[str], out: str | Path,
                      *, overwrite: bool = False) -> DomainFile:
    """Validate the document as written, then write it; nothing is written when it is invalid
    or ``out`` exists (unless ``overwrite``)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise DomainImportError(f"{out} exists; pass --force to overwrite it")
    text = render(document, notes, header)
    try:
        domain_file = domain_file_from_data(yaml.safe_load(text), source=out)
    except DomainFileError as exc:
        raise DomainImportError("the imported tools do not make a valid domain file:\n" +
                                "\n".join(f"  {where}: {what}" for where, what in exc.problems)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return domain_file


def import_openai(tools_path: str | Path, policy_path: str | Path, out: str | Path, *, name: str | None = None,
                  description: str = "", overwrite: bool = False) -> DomainFile:
    functions = read_openai_tools(tools_path)
    policy = _read_policy(policy_path)
    document, notes = from_openai_tools(functions, name=name or domain_name(Path(out).stem), policy=policy,
                                        description=description)
    return write_domain_file(document, notes, header_lines(f"the OpenAI tool list {tools_path}", len(functions)),
                             out, overwrite=overwrite)


def import_mcp(command: str, out: str | Path, *, policy_path: str | Path | None = None, name: str | None = None,
               description: str = "", overwrite: bool = False, timeout_s: float = MCP_TIMEOUT_S) -> DomainFile:
    """The policy is ``policy_path``'s text, else the server's instructions, else a placeholder."""
    server_name, instructions, tools = anyio.run(list_mcp_tools, command, timeout_s)
    if not tools:
        raise DomainImportError(f"the MCP server `{command}` has no tools")
    policy = _read_policy(policy_path) if policy_path else (instructions.strip() + "\n" if instructions.strip()
                                                            else PLACEHOLDER_POLICY)
    document, notes = from_mcp_tools(tools, name=name or domain_name(server_name), policy=policy,
                                     description=description)
    return write_domain_file(document, notes, header_lines(f"the MCP server `{command}`", len(tools)), out,
                             overwrite=overwrite)


def _read_policy(path: str | Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DomainImportError(f"{path}: cannot read the policy: {exc.strerror or exc}") from None
    if not text.strip():
        raise DomainImportError(f"{path}: the policy is empty")
    return text
