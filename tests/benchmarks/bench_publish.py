"""Publishing a ~1 GiB database dump vs `cp`, `sha256sum` and `gzip -t` run one after another.

Goal: BackupStore.publish (copy + sha256 + integrity check + fsync, one read of the source) takes no longer
than the three tools in sequence on the same file.  Both sides run warm: the dump was just written, so it
sits in the page cache for both, and each side writes its copy to the same filesystem.

The dump is SQL-ish text (INSERT rows with ids, dates, amounts, names and some hashes) compressed with
gzip level 6 to a realistic ratio.  Generating ~4 GiB of distinct text would take minutes, so a few
distinct ~16 MiB blocks are compressed once and their gzip members repeated to ~1 GiB (a valid
multi-member gzip stream, as `gzip -t` and publish both accept), ending with mysqldump's trailer.

Run from the repository root: .venv/bin/python tests/benchmarks/bench_publish.py
"""

from __future__ import annotations

import gzip
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from fmappliance.agent.backups import BackupStore

TARGET_BYTES = 1 << 30
BLOCK_TEXT_BYTES = 16 << 20
DISTINCT_BLOCKS = 2


def sql_block(seed: int) -> bytes:
    """~16 MiB of mysqldump-like INSERT statements."""
    rnd = random.Random(seed)
    customers = [
        f"CUST-{rnd.randrange(10**5):05d} {rnd.choice(['Ltd', 'GmbH', 'LLC', 'SARL', 'Pvt Ltd'])}" for _ in range(400)
    ]
    items = [f"ITEM-{n:04d}" for n in range(300)]
    words = [
        "net",
        "30",
        "days",
        "paid",
        "partly",
        "overdue",
        "draft",
        "submitted",
        "cancelled",
        "shipping",
        "discount",
        "tax",
        "VAT",
        "standard",
        "rated",
        "export",
        "import",
        "credit",
        "note",
        "return",
    ]
    owners = ["Administrator", "accounts@example.com", "sales@example.com", "jane@example.com"]
    lines, size, row = [], 0, seed * 10_000_000
    while size < BLOCK_TEXT_BYTES:
        values = []
        for _ in range(40):
            row += 1
            values.append(
                "('ACC-SINV-2026-%05d','2026-%02d-%02d %02d:%02d:%02d.%06d','%s','%s',%d,'%s','%s',%d.%02d,%d.%02d,"
                "'USD','%s',NULL,0,'%016x')"
                % (
                    row,
                    rnd.randint(1, 12),
                    rnd.randint(1, 28),
                    rnd.randint(0, 23),
                    rnd.randint(0, 59),
                    rnd.randint(0, 59),
                    rnd.getrandbits(20),
                    rnd.choice(owners),
                    rnd.choice(owners),
                    rnd.randint(0, 2),
                    rnd.choice(customers),
                    rnd.choice(items),
                    rnd.randint(0, 99999),
                    rnd.randint(0, 99),
                    rnd.randint(0, 9999),
                    rnd.randint(0, 99),
                    " ".join(rnd.choices(words, k=rnd.randint(1, 6))),
                    rnd.getrandbits(64),
                )
            )
        line = "INSERT INTO `tabSales Invoice` VALUES " + ",".join(values) + ";\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()


def make_dump(path: Path) -> tuple[int, int]:
    """Write the ~1 GiB dump; returns (compressed bytes, uncompressed bytes)."""
    head = gzip.compress(b"-- begin frappe metadata\n-- end frappe metadata\n-- MariaDB dump 10.19\n", 6)
    members = []
    for seed in range(DISTINCT_BLOCKS):
        text = sql_block(seed)
        members.append((gzip.compress(text, 6), len(text)))
    tail_text = b"/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;\n\n-- Dump completed on 2026-01-13  2:00:03\n"
    tail = gzip.compress(tail_text, 6)
    written, raw = len(head), 0
    with open(path, "wb") as out:
        out.write(head)
        index = 0
        while written + len(tail) < TARGET_BYTES:
            data, text_size = members[index % len(members)]
            out.write(data)
            written += len(data)
            raw += text_size
            index += 1
        out.write(tail)
    return written + len(tail), raw + len(tail_text)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    for tool in ("cp", "sha256sum", "gzip"):
        if not shutil.which(tool):
            print(f"publish 1 GiB: cannot compare, {tool} is not installed  MISS")
            return 0
    # Source, cp's copy and the published copy all live in one temp dir: one filesystem for both sides.
    work = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    try:
        dump = work / "20260113_020000-site1_example_com-database.sql.gz"
        start = time.perf_counter()
        compressed, raw = make_dump(dump)
        print(
            f"dump: {compressed / 2**30:.2f} GiB gzip of {raw / 2**30:.2f} GiB SQL "
            f"(ratio {raw / compressed:.1f}), made in {time.perf_counter() - start:.1f} s",
            flush=True,
        )

        copy = work / "copy.sql.gz"
        tools = {
            "cp": ["cp", str(dump), str(copy)],
            "sha256sum": ["sha256sum", str(dump)],
            "gzip -t": ["gzip", "-t", str(dump)],
        }
        tool_times = {
            name: timed(lambda argv=argv: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL))
            for name, argv in tools.items()
        }
        copy.unlink()
        sequential = sum(tool_times.values())
        print(
            "tools: "
            + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in tool_times.items())
            + f"; one after another {sequential:.2f} s",
            flush=True,
        )

        store = BackupStore(str(work / "backups"), {"daily": 7, "weekly": 4, "monthly": 12})
        result = {}
        publish_time = timed(
            lambda: result.update(
                store.publish("prod", "site1.example.com", {"database": str(dump)}, created=datetime.now(timezone.utc))
            )
        )
        assert result["verified"] and result["files"][0]["size"] == compressed
        print(
            f"publish (copy + sha256 + gzip check + '-- Dump completed' + fsync): {publish_time:.2f} s "
            f"({compressed / publish_time / 2**20:.0f} MiB/s)",
            flush=True,
        )

        ratio = publish_time / sequential
        verdict = "PASS" if ratio <= 1.0 else "MISS"
        print(
            f"publish 1 GiB dump: {publish_time:.2f} s vs cp+sha256sum+gzip -t {sequential:.2f} s, "
            f"ratio {ratio:.2f} (goal <= 1.00)  {verdict}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
