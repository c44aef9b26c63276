#!/usr/bin/env python3
"""Packages a built `terraform-provider-sigil` binary the way Terraform installs providers.

Called by scripts/release.sh (which builds the binary and signs the checksums); stdlib only.
It writes, into OUT:

- `terraform-provider-sigil_VERSION_linux_amd64.zip`: the binary, named
  `terraform-provider-sigil_vVERSION` inside as registry providers are, in a reproducible
  zip (one entry, fixed timestamp from SOURCE_DATE_EPOCH, mode 0755);
- `terraform-provider-sigil_VERSION_manifest.json`: the registry manifest, with the plugin
  protocol versions the binary really negotiates (probed through its go-plugin handshake);
- `terraform-provider-sigil_VERSION_SHA256SUMS`: `sha256sum` lines for the zip and the
  manifest (the registry reads the zip lines; `sha256sum -c` checks both);
- `mirror/HOST/NAMESPACE/TYPE/`: a provider mirror that is at once a network mirror
  (`index.json`, `VERSION.json` with `h1:` and `zh:` hashes, the zip beside them: serve the
  `mirror/` directory over HTTPS) and a packed filesystem mirror (point
  `filesystem_mirror.path` at `mirror/`; Terraform ignores the JSON files there).

Why our own hashes: `zh:` is the sha256 of the zip, `h1:` is Terraform's "dirhash Hash1"
over the files in the zip (sha256 of the sorted `HEX  NAME\n` lines, base64). Terraform
checks both at `terraform init`, so the acceptance tests use Terraform as the independent
check of this code.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PROVIDER_TYPE = "sigil"
PLATFORM = "linux_amd64"
MAGIC_COOKIE_KEY = "TF_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"
# Plugin protocol majors probed: Terraform has used 4 (0.11), 5 (0.12+) and 6 (1.0+).
PROBED_PROTOCOLS = range(1, 10)
PROBE_TIMEOUT_S = 10.0
# An index.json we merge into is a small document; anything larger is not ours.
MAX_INDEX_BYTES = 1 << 20
VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$")
HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?$")
NAMESPACE_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,62}[a-z0-9])?$")
ZIP_EPOCH_MIN = 315532800  # 1980-01-01: the earliest time a zip entry can hold


class ReleaseError(Exception):
    """A release input or output that is not usable; the message names the culprit."""


def archive_name(version: str) -> str:
    return f"terraform-provider-{PROVIDER_TYPE}_{version}_{PLATFORM}.zip"


def binary_name(version: str) -> str:
    return f"terraform-provider-{PROVIDER_TYPE}_v{version}"


def check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise ReleaseError(f"--version {version!r} is not a semantic version like 1.2.3 or 1.2.3-rc.1")
    return version


def parse_source(source: str) -> tuple[str, str, str]:
    """`HOST/NAMESPACE/TYPE` as users write it in `required_providers`."""
    parts = source.lower().split("/")
    if len(parts) != 3:
        raise ReleaseError(f"--source {source!r} must be HOSTNAME/NAMESPACE/TYPE, e.g. registry.sigil.dev/sigil/sigil")
    host, namespace, ptype = parts
    if not HOST_RE.match(host):
        raise ReleaseError(f"--source {source!r}: {host!r} is not a hostname")
    if not NAMESPACE_RE.match(namespace):
        raise ReleaseError(f"--source {source!r}: namespace {namespace!r} must be letters, digits, '-' or '_'")
    if ptype != PROVIDER_TYPE:
        raise ReleaseError(f"--source {source!r}: the type must be {PROVIDER_TYPE!r} (the archive is terraform-provider-{PROVIDER_TYPE}_*)")
    return host, namespace, ptype


def check_elf_amd64(binary: Path) -> None:
    """The archive is labelled linux_amd64: refuse anything else rather than mislabel it."""
    try:
        with open(binary, "rb") as f:
            head = f.read(20)
    except OSError as e:
        raise ReleaseError(f"--binary {binary}: {e.strerror}") from None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise ReleaseError(f"--binary {binary}: not an ELF executable")
    if head[4] != 2 or head[5] != 1 or int.from_bytes(head[18:20], "little") != 0x3E:
        raise ReleaseError(f"--binary {binary}: not a 64-bit little-endian x86-64 ELF, cannot label it {PLATFORM}")


def probe_protocols(binary: Path) -> list[int]:
    """Plugin protocol versions the binary completes a go-plugin handshake for.

    Each version is offered alone, as Terraform offers its list; a binary that speaks it
    prints `1|VERSION|unix|...` and starts serving (we stop it), one that does not exits.
    """
    found = []
    with tempfile.TemporaryDirectory(prefix="sigil-probe-") as sockdir:
        for v in PROBED_PROTOCOLS:
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                MAGIC_COOKIE_KEY: MAGIC_COOKIE_VALUE,
                "PLUGIN_PROTOCOL_VERSIONS": str(v),
                "PLUGIN_UNIX_SOCKET_DIR": sockdir,
            }
            line = _handshake_line(binary, env)
            fields = line.split("|")
            if len(fields) >= 5 and fields[0] == "1" and fields[1] == str(v) and fields[4] == "grpc":
                found.append(v)
    if not found:
        raise ReleaseError(f"--binary {binary}: completed no go-plugin handshake for protocols {PROBED_PROTOCOLS.start}..{PROBED_PROTOCOLS.stop - 1}")
    return found


def _handshake_line(binary: Path, env: dict[str, str]) -> str:
    try:
        proc = subprocess.Popen([str(binary)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    except OSError as e:
        raise ReleaseError(f"--binary {binary}: cannot run it: {e.strerror}") from None
    try:
        buf = b""
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        fd = proc.stdout.fileno()
        while b"\n" not in buf and len(buf) < 4096:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReleaseError(f"--binary {binary}: no handshake line within {PROBE_TIMEOUT_S:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # exited: this version is refused
            buf += chunk
        return buf.split(b"\n", 1)[0].decode("utf-8", "replace")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def zip_epoch() -> int:
    raw = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not raw:
        return ZIP_EPOCH_MIN
    if not raw.isdigit():
        raise ReleaseError(f"SOURCE_DATE_EPOCH={raw!r} is not a number of seconds")
    return max(int(raw), ZIP_EPOCH_MIN)


def write_zip(binary: Path, dest: Path, inner: str, epoch: int, level: int) -> None:
    """One entry, fixed time and mode: the same binary always gives the same bytes."""
    info = zipfile.ZipInfo(inner, date_time=time.gmtime(epoch)[:6])
    info.create_system = 3  # unix, so external_attr carries the mode
    info.external_attr = (0o100755 & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    data = binary.read_bytes()
    with _atomic(dest) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_zh(zip_path: Path) -> str:
    """Terraform's `zh:` scheme: the sha256 of the archive itself."""
    return "zh:" + sha256_file(zip_path)


def hash_h1(zip_path: Path) -> str:
    """Terraform's `h1:` scheme (Go's dirhash Hash1) over the zip's entries."""
    lines = []
    with zipfile.ZipFile(zip_path) as zf:
        for name in sorted(zf.namelist()):
            if "\n" in name:
                raise ReleaseError(f"{zip_path}: entry name {name!r} contains a newline")
            h = hashlib.sha256()
            with zf.open(name) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            lines.append(f"{h.hexdigest()}  {name}\n")
    return "h1:" + base64.b64encode(hashlib.sha256("".join(lines).encode()).digest()).decode()


def manifest(protocols: list[int]) -> str:
    doc = {"version": 1, "metadata": {"protocol_versions": [f"{v}.0" for v in protocols]}}
    return json.dumps(doc, indent=2) + "\n"


def sha256sums(paths: list[Path]) -> str:
    return "".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(paths, key=lambda p: p.name))


def read_index(path: Path) -> dict:
    """An existing mirror index.json, so a new version adds to the ones published before."""
    if not path.exists():
        return {}
    if path.stat().st_size > MAX_INDEX_BYTES:
        raise ReleaseError(f"{path}: larger than {MAX_INDEX_BYTES} bytes, not a mirror index")
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ReleaseError(f"{path}: not JSON ({e}); move it away to start a new index") from None
    versions = doc.get("versions") if isinstance(doc, dict) else None
    if not isinstance(versions, dict):
        raise ReleaseError(f"{path}: has no \"versions\" object; move it away to start a new index")
    return versions


def write_mirror(root: Path, source: tuple[str, str, str], version: str, zip_path: Path, hashes: list[str]) -> list[Path]:
    host, namespace, ptype = source
    d = root / host / namespace / ptype
    d.mkdir(parents=True, exist_ok=True)
    archive = d / zip_path.name
    with _atomic(archive) as tmp:
        shutil.copyfile(zip_path, tmp)
    versions = read_index(d / "index.json")
    versions[version] = {}
    ordered = dict(sorted(versions.items()))
    _write_text(d / "index.json", json.dumps({"versions": ordered}, indent=2) + "\n")
    # The URL is relative to VERSION.json, so the tree can be served from any base URL.
    doc = {"archives": {PLATFORM: {"url": zip_path.name, "hashes": hashes}}}
    _write_text(d / f"{version}.json", json.dumps(doc, indent=2) + "\n")
    return [d / "index.json", d / f"{version}.json", archive]


class _atomic:
    """Writes to a temporary sibling and renames, so no half-written artefact is ever published."""

    def __init__(self, dest: Path):
        self.dest = dest

    def __enter__(self) -> Path:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.dest.name}.", dir=self.dest.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.tmp.chmod(0o644)
            os.replace(self.tmp, self.dest)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def _write_text(dest: Path, text: str) -> None:
    with _atomic(dest) as tmp:
        tmp.write_text(text)


def strip_debug(binary: Path, dest: Path) -> Path:
    """A copy of the binary without debug info (what a debug build mostly is)."""
    strip = shutil.which("strip")
    if not strip:
        raise ReleaseError("--strip: strip not found: apt-get install binutils")
    p = subprocess.run([strip, "--strip-debug", "-o", str(dest), str(binary)], capture_output=True, text=True)
    if p.returncode != 0:
        raise ReleaseError(f"--strip: strip failed on {binary}: {p.stderr.strip()[:500]}")
    return dest


def package(binary: Path, version: str, out: Path, sources: list[str], level: int, strip: bool = False) -> list[Path]:
    check_version(version)
    parsed = [parse_source(s) for s in sources]
    check_elf_amd64(binary)
    if strip:
        with tempfile.TemporaryDirectory(prefix="sigil-release-") as work:
            stripped = strip_debug(binary, Path(work) / binary.name)
            return _package(stripped, version, out, parsed, level)
    return _package(binary, version, out, parsed, level)


def _package(binary: Path, version: str, out: Path, parsed: list[tuple[str, str, str]], level: int) -> list[Path]:
    protocols = probe_protocols(binary)
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / archive_name(version)
    write_zip(binary, zip_path, binary_name(version), zip_epoch(), level)
    man_path = out / f"terraform-provider-{PROVIDER_TYPE}_{version}_manifest.json"
    _write_text(man_path, manifest(protocols))
    sums_path = out / f"terraform-provider-{PROVIDER_TYPE}_{version}_SHA256SUMS"
    _write_text(sums_path, sha256sums([zip_path, man_path]))
    hashes = [hash_h1(zip_path), hash_zh(zip_path)]
    written = [zip_path, man_path, sums_path]
    for src in parsed:
        written += write_mirror(out / "mirror", src, version, zip_path, hashes)
    return written


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check --version and --source (before a long build)")
    ap.add_argument("--binary", type=Path, help="the built terraform-provider-sigil (linux amd64)")
    ap.add_argument("--version", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--source", action="append", required=True, help="HOST/NAMESPACE/TYPE for the mirror tree (repeatable)")
    ap.add_argument("--strip", action="store_true", help="package a copy stripped of debug info")
    ap.add_argument("--compression-level", type=int, default=9, choices=range(0, 10), metavar="0-9")
    a = ap.parse_args(argv)
    try:
        if a.check:
            check_version(a.version)
            for src in a.source:
                parse_source(src)
            return 0
        if a.binary is None:
            raise ReleaseError("--binary is required")
        written = package(a.binary, a.version, a.out, a.source, a.compression_level, a.strip)
    except ReleaseError as e:
        print(f"release: {e}", file=sys.stderr)
        return 1
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
