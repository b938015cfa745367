"""`seer presets` and `seer policies`: what can be run, and every policy's parameters."""

from __future__ import annotations

import argparse

from seer.cli.common import print_json
from seer.errors import SeerInputError


def cmd_presets(args) -> int:
    from seer.policies import POLICIES
    from seer.presets import presets
    from seer.sim.cluster import load_cluster

    items = {}
    for name, desc in presets().items():
        cl = load_cluster(name)
        items[name] = {
            "description": desc,
            "instances": cl.instances,
            "gpus_per_instance": cl.tp * cl.dp,
            "model": cl.model,
            "kv_capacity_tokens": cl.kv_capacity(),
        }
    if args.json:
        print_json({"presets": items, "policies": {k: v[1] for k, v in POLICIES.items()}})
        return 0
    print("presets (seer/presets/*.toml; copy one and pass its path to --cluster to edit):")
    for name, it in items.items():
        print(
            f"  {name:<14} {it['instances']} x {it['gpus_per_instance']} GPU(s) of {it['model']}, "
            f"{it['kv_capacity_tokens']:,} KV tokens/instance. {it['description']}"
        )
    print("policies (parameters: `seer policies`):")
    for name, (_cls, desc) in POLICIES.items():
        print(f"  {name:<14} {desc}")
    return 0


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0]


def cmd_policies(args) -> int:
    from seer.policies import POLICIES, policy_class

    if args.name is not None and (not args.name.strip() or ":" in args.name):  # '' listed them all
        raise SeerInputError(f"policies takes one policy name (NAME, without :KEY=VALUE), not {args.name!r}")
    names = [args.name] if args.name is not None else list(POLICIES)
    table = {
        n: {
            "description": POLICIES[n][1] if n in POLICIES else _first_line(policy_class(n).__doc__),
            "parameters": policy_class(n).Config.describe(),
        }
        for n in names
    }
    if args.json:
        print_json(table)
        return 0
    for name, item in table.items():
        print(f"{name}: {item['description']}")
        for f in item["parameters"]:
            choices = f" ({' | '.join(map(str, f['choices']))})" if f["choices"] else ""
            print(f"  {f['name']:<20} {f['type']:<22} default {f['default']!s:<10} {f['help']}{choices}")
        if not item["parameters"]:
            print("  (no parameters)")
    print("set one with NAME:KEY=VALUE, e.g. --policies context:chunk_size=2048,seer:scope=own")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "presets",
        help="list the paper setups and policies",
        description="List the preset files (workload and cluster of each paper setup).",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser(
        "policies",
        help="every policy's parameters: type, default and meaning",
        description="List the scheduling policies and their typed parameters (set with NAME:KEY=VALUE).",
    )
    p.add_argument("name", nargs="?", help="one policy (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_policies)
