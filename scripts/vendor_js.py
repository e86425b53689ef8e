"""Refresh the viewer's vendored JavaScript from the npm registry (a maintainer's tool).

    python scripts/vendor_js.py            # fetch the versions pinned in VENDOR.json, check or write them
    python scripts/vendor_js.py --latest   # move each library to the registry's latest version

Each library is one file of its npm package, copied as it is into
``src/wfkit/web/static/vendor/`` with its licence beside it; ``VENDOR.json`` there records its
version, licence, the tarball it came from and the file's SHA-256. The wheel ships these files,
so the viewer works with no internet and no Node at install time; nothing is fetched at run
time. ``tests/web/test_vendor.py`` checks every file against its recorded checksum.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "src" / "wfkit" / "web" / "static" / "vendor"
REGISTRY = "https://registry.npmjs.org"
#: What is vendored: the npm package, the file taken from it, the name it gets here.
LIBRARIES = {"mermaid": {"file": "dist/mermaid.min.js", "as": "mermaid.min.js"}}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as answer:  # noqa: S310 (a fixed https registry)
        return answer.read()


def refresh(latest: bool) -> None:
    record_path = VENDOR / "VENDOR.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    for package, spec in LIBRARIES.items():
        version = "latest" if latest or package not in record else record[package]["version"]
        meta = json.loads(_get(f"{REGISTRY}/{package}/{version}"))
        tarball = _get(meta["dist"]["tarball"])
        if hashlib.sha512(tarball).digest() != _integrity(meta["dist"]["integrity"]):
            sys.exit(f"{package} {meta['version']}: the tarball does not match the registry's integrity hash")
        with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
            body = tar.extractfile(f"package/{spec['file']}").read()  # type: ignore[union-attr]
            licence = tar.extractfile("package/LICENSE").read()  # type: ignore[union-attr]
        digest = hashlib.sha256(body).hexdigest()
        old = record.get(package, {})
        if old.get("version") == meta["version"] and old.get("sha256", digest) != digest:
            sys.exit(f"{package} {meta['version']}: the registry's file differs from the one recorded")
        (VENDOR / spec["as"]).write_bytes(body)
        (VENDOR / f"{package}.LICENSE").write_bytes(licence)
        record[package] = {"version": meta["version"], "license": meta.get("license"), "file": spec["as"],
                           "from": f"{meta['dist']['tarball']} ({spec['file']})", "sha256": digest}
        print(f"{package} {meta['version']}: {spec['as']} ({len(body)} bytes, sha256 {digest})")
    record_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _integrity(text: str) -> bytes:
    import base64

    kind, _, value = text.partition("-")
    if kind != "sha512":
        sys.exit(f"unexpected integrity hash {kind!r}")
    return base64.b64decode(value)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latest", action="store_true", help="move each library to its latest version")
    refresh(parser.parse_args().latest)
