"""The device kit holds the same packages as the rehearsal kit, each with tags CPython 3.12 installs.

    python bench/gpu/kit_parity.py .devkit/py3.11 .devkit/py3.12

Compares the wheels' (name, version) pairs of the two kits and checks every 3.12 wheel's tags (``py3-none`` /
``py2.py3-none``, ``cp312-cp312`` or ``cp3X-abi3``, any or manylinux x86-64 platforms) and that both hold the same
seven GL .debs. Prints one JSON line; exit code 1 on any difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def wheels(kit: Path) -> dict[tuple[str, str], str]:
    out = {}
    for w in sorted((kit / "wheels").glob("*.whl")):
        name, version, *_ = w.name[:-4].split("-")
        out[(name.lower().replace("_", "-"), version)] = w.name
    return out


def tags_ok(filename: str, cp: str) -> bool:
    python, abi, platform = filename[:-4].split("-")[-3:]
    py_ok = (python in ("py3", "py2.py3") and abi == "none") or (python == cp and abi == cp) or \
        (python.startswith("cp3") and abi == "abi3")
    plat_ok = all(p == "any" or (p.startswith("manylinux") and p.endswith("x86_64")) for p in platform.split("."))
    return py_ok and plat_ok


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    if not (b / "wheels").is_dir():
        print(json.dumps({"part": "kit_parity", "ok": False, "error": f"no kit at {b}; run bash "
                          "bench/gpu/build_kit.sh 3.12"}))
        return 1
    wa, wb = wheels(a), wheels(b)
    bad_tags = [f for f in wb.values() if not tags_ok(f, "cp312")]
    debs_a = sorted(p.name for p in (a / "debs").glob("*.deb"))
    debs_b = sorted(p.name for p in (b / "debs").glob("*.deb"))
    only_a, only_b = sorted(set(wa) - set(wb)), sorted(set(wb) - set(wa))
    ok = not only_a and not only_b and not bad_tags and debs_a == debs_b and len(debs_b) == 7
    print(json.dumps({"part": "kit_parity", "ok": ok, "packages": len(wb), "only_in_rehearsal_kit": only_a,
                      "only_in_device_kit": only_b, "bad_tags": bad_tags, "debs_equal": debs_a == debs_b,
                      "device_wheels": sorted(wb.values())}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
