"""The ``flywheel domain`` and ``flywheel mcp`` verbs: check and import domain files, and
serve a Mock World over MCP. ``add_domain_verbs`` adds them to the ``flywheel`` parser;
``python -m flywheel_assets.cli_domain ...`` runs them alone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def _say(text: str) -> None:
    """A plain line on stderr: no markup (paths and errors hold brackets), no wrapping."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def cmd_domain_check(args: argparse.Namespace) -> int:
    """Validate a domain file and summarise it; every problem on its own line, exit 2."""
    from flywheel_assets.world.domain_files import DomainFileError, load_domain_file, summary

    try:
        domain_file = load_domain_file(args.file)
    except DomainFileError as exc:
        for line in str(exc).splitlines():
            _say(line)
        _say(f"flywheel domain check: {len(exc.problems)} problem(s) in {args.file}")
        return 2
    facts = summary(domain_file)
    if args.json:
        print(json.dumps(facts))
        return 0
    table = Table(title=f"{facts['name']}: {facts['tools']} tools, valid", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for key in ("reads", "writes", "procedural", "llm_simulated", "verification_tools", "personas", "workflows"):
        table.add_row(key.replace("_", " "), ", ".join(facts[key]) or "-")
    table.add_row("entities", ", ".join(f"{name} ({count} records)" for name, count in facts["entities"].items()) or "-")
    Console().print(table)
    return 0


def cmd_domain_import(args: argparse.Namespace) -> int:
    """Write a domain file from an OpenAI tool list (+ policy) or an MCP server's tools."""
    from flywheel_assets.domain_import import DomainImportError, import_mcp, import_openai
    from flywheel_assets.world.domain_files import summary

    if bool(args.openai_tools) == bool(args.mcp):
        _say("flywheel domain import: give exactly one of --openai-tools FILE or --mcp COMMAND")
        return 2
    if args.openai_tools and not args.policy:
        _say("flywheel domain import: --openai-tools needs --policy FILE (the policy in markdown)")
        return 2
    try:
        if args.openai_tools:
            domain_file = import_openai(args.openai_tools, args.policy, args.out, name=args.name,
                                        description=args.description, overwrite=args.force)
        else:
            domain_file = import_mcp(args.mcp, args.out, policy_path=args.policy, name=args.name,
                                     description=args.description, overwrite=args.force)
    except DomainImportError as exc:
        _say(f"flywheel domain import: {exc}")
        return 2
    facts = summary(domain_file)
    _say(f"wrote {args.out}: domain {facts['name']!r}, {facts['tools']} tools "
         f"({len(facts['reads'])} reads, {len(facts['writes'])} writes); review each tool's access and `changes`, "
         f"then `flywheel domain check {args.out}`")
    return 0


def cmd_mcp_serve(args: argparse.Namespace) -> int:
    """Serve one world's tools over MCP (stdio, or streamable HTTP on 127.0.0.1)."""
    import anyio

    from flywheel_assets.mcp_serve import (
        HOST, ServeError, domain_file_world, instance_world, load_instance, seed_instance, serve_http, serve_stdio,
    )
    from flywheel_assets.settings import warehouse_path

    chosen = [flag for flag, value in (("--instance", args.instance), ("--domain", args.domain),
                                       ("--domain-file", args.domain_file)) if value]
    if len(chosen) != 1:
        _say("flywheel mcp serve: give exactly one of --instance ID, --domain NAME [--seed N], --domain-file FILE")
        return 2
    if args.home:
        import os

        os.environ["FLYWHEEL_HOME"] = str(Path(args.home).resolve())
    try:
        if args.instance:
            served = instance_world(load_instance(warehouse_path(), args.instance))
        elif args.domain:
            served = instance_world(seed_instance(args.domain, args.seed))
        else:
            served = domain_file_world(args.domain_file)
    except ServeError as exc:
        _say(f"flywheel mcp serve: {exc}")
        return 2
    _say(f"serving {served.about}")
    if args.http:
        _say(f"MCP over streamable HTTP at http://{HOST}:{args.port}/mcp")
        anyio.run(serve_http, served, args.port)
    else:
        anyio.run(serve_stdio, served)
    return 0


def add_domain_verbs(verbs: argparse._SubParsersAction) -> None:
    """``flywheel domain check|import`` and ``flywheel mcp serve``."""
    domain = verbs.add_parser("domain", help="check a domain file, or import one from OpenAI tools or an MCP server")
    domain_verbs = domain.add_subparsers(dest="domain_verb", required=True)
    check = domain_verbs.add_parser("check", help="validate a domain file and summarise it")
    check.add_argument("file")
    check.add_argument("--json", action="store_true", help="the summary as one JSON object")
    check.set_defaults(func=cmd_domain_check)
    imp = domain_verbs.add_parser("import", help="write a domain file from an OpenAI tool list or an MCP server")
    imp.add_argument("--openai-tools", metavar="FILE", help="a JSON list of OpenAI tools")
    imp.add_argument("--mcp", metavar="COMMAND", help='the command that starts a stdio MCP server, quoted')
    imp.add_argument("--policy", metavar="FILE", help="the policy in markdown (needed with --openai-tools; "
                                                      "with --mcp the server's instructions are the default)")
    imp.add_argument("--out", required=True, help="the domain file (YAML) to write")
    imp.add_argument("--name", help="the domain's name (default: from --out, or the MCP server's name)")
    imp.add_argument("--description", default="", help="what the domain is, for the agent's system prompt")
    imp.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    imp.set_defaults(func=cmd_domain_import)

    mcp = verbs.add_parser("mcp", help="serve a Mock World's tools over MCP")
    mcp_verbs = mcp.add_subparsers(dest="mcp_verb", required=True)
    serve = mcp_verbs.add_parser("serve", help="serve one world over MCP (stdio, or --http on 127.0.0.1)",
                                 description="The world persists across calls (writes change later reads) "
                                             "until the server stops.")
    serve.add_argument("--instance", metavar="ID", help="a task instance from the warehouse")
    serve.add_argument("--home", help="where .flywheel/ lives (default: $FLYWHEEL_HOME, else the current directory)")
    serve.add_argument("--domain", metavar="NAME", help="the first seed instance of a built-in domain")
    serve.add_argument("--seed", type=int, default=0, help="the round seed for --domain (default: 0)")
    serve.add_argument("--domain-file", metavar="FILE", help="a domain file's seed records and Python tools")
    serve.add_argument("--http", action="store_true", help="streamable HTTP on 127.0.0.1 instead of stdio")
    serve.add_argument("--port", type=int, default=8765, help="the HTTP port (default: 8765)")
    serve.set_defaults(func=cmd_mcp_serve)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flywheel", description=__doc__)
    add_domain_verbs(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
