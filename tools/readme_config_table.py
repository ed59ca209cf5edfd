#!/usr/bin/env python3
"""Prints the README's config-key table from `iisan config schema` (the one schema table).

Usage: build/iisan config schema | tools/readme_config_table.py
"""
import json
import sys


def cell(value):
    text = json.dumps(value) if not isinstance(value, str) else (value if value else '""')
    return text.replace("|", "\\|")


def main():
    keys = json.load(sys.stdin)
    print("| key | type | default | allowed | what it sets |")
    print("|---|---|---|---|---|")
    for key in keys:
        if "choices" in key:
            allowed = " \\| ".join(key["choices"])
        elif "pattern" in key:
            allowed = key["pattern"]
        elif "min" in key:
            allowed = f"{cell(key['min'])} … {cell(key['max'])}"
            if "max_items" in key:
                allowed += f", at most {key['max_items']} entries"
        else:
            allowed = ""
        print(f"| `{key['key']}` | {key['type']} | {cell(key['default'])} | {allowed} | {key['help'].replace('|', '/')} |")


if __name__ == "__main__":
    main()
