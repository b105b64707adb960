"""Deployment templates shipped with runyard (`runyard pool deploy-template`)."""

from __future__ import annotations

from pathlib import Path

AWS_POOL = Path(__file__).with_name("aws-pool.yaml")


def aws_pool_template(pool: str, endpoints: str) -> str:
    """The AWS template with this pool's defaults filled in."""
    values = {
        "pool-name": pool,
        "endpoints": endpoints,
        "token-name": f"/runyard/{pool}/token",
        "key-name": f"/runyard/{pool}/private-key",
        "group-name": f"runyard-{pool}",
    }
    out = []
    for line in AWS_POOL.read_text().splitlines(keepends=True):
        marker = line.find("  # runyard: ")
        if marker >= 0:
            key = line[marker + len("  # runyard: "):].strip()
            indent = line[: len(line) - len(line.lstrip())]
            line = f'{indent}Default: "{values[key]}"\n'
        out.append(line)
    return "".join(out)
