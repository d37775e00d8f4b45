"""Rewrite a wheel without the files that match some glob patterns, with a RECORD that matches what is left.

    python bench/gpu/slim_wheel.py IN.whl OUT.whl PATTERN [PATTERN ...]

A pattern is an ``fnmatch`` glob on the path inside the wheel (``dm_control/locomotion/soccer/assets/*``). The wheel
keeps its name, version and tags; the RECORD lists every remaining file with its sha256 and size, so pip installs it
like the original. Prints one JSON line: files and bytes (compressed) before and after.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import sys
import zipfile


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def slim(src: str, dst: str, patterns: list[str]) -> dict:
    with zipfile.ZipFile(src) as zin:
        infos = zin.infolist()
        record = next((i.filename for i in infos if i.filename.endswith(".dist-info/RECORD")), None)
        if record is None:
            raise SystemExit(f"slim_wheel: {src} has no .dist-info/RECORD; is it a wheel?")
        kept, dropped = [], []
        for info in infos:
            if info.filename == record:
                continue
            (dropped if any(fnmatch.fnmatch(info.filename, p) for p in patterns) else kept).append(info)
        lines = []
        with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
            for info in kept:
                data = zin.read(info)
                zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
                lines.append(_record_line(info.filename, data))
            lines.append(f"{record},,")
            zout.writestr(record, "\n".join(lines) + "\n")
    with zipfile.ZipFile(dst) as zcheck:
        after = sum(i.compress_size for i in zcheck.infolist())
    return {"wheel": dst.rsplit("/", 1)[-1], "files_before": len(infos), "files_after": len(kept) + 1,
            "dropped_files": len(dropped), "mb_before": round(sum(i.compress_size for i in infos) / 1e6, 2),
            "mb_after": round(after / 1e6, 2)}


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    print(json.dumps(slim(sys.argv[1], sys.argv[2], sys.argv[3:])))
