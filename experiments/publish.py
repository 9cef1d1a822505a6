"""Copy a `gpulinear reproduce` output folder into the repository's published results.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 gpulinear reproduce --full --jobs 2 --out runs/full
    python experiments/publish.py runs/full results/paper-length

Copies REPORT.md (with a header: the regenerating command, date, machine, versions), every PNG
and each experiment's claims JSON (keys holding raw curves dropped) into DEST, writes DEST/
claims.json (every claim of every experiment in report order) refuses to publish more than
MAX_BYTES (raw curves, .npz, stay in the run folder), lists in REPORT.md every claim whose
verdict differs from what DEST held before (and the date it was published), and rewrites the
claims table between the README's markers (README_START / README_END) from the published claims.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

MAX_BYTES = 5 * 1024 * 1024
README_START = "<!-- paper-length claims: written by experiments/publish.py -->"
README_END = "<!-- end of paper-length claims -->"
RAW_KEYS = ("curves",)      # fig5_right's per-iteration batch losses: raw curves, not claims
# One BLAS / torch thread: the estimate's rates are 1-thread rates, and on a shared 2-core CPU
# 2 threads ran 10x slower (gpulinear.report.blas_threads_limit).
COMMAND = ("OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 gpulinear reproduce --full --jobs 2 --out {src} && "
           "python experiments/publish.py {src} {dest}")


def machine() -> str:
    """'Linux x86_64, 2 CPUs (model name), python 3.11.x' from what this machine says."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
            f"{f' ({model})' if model else ''}, python {platform.python_version()}")


def versions() -> str:
    import numpy
    import scipy

    import gpulinear
    parts = [f"gpulinear {gpulinear.__version__}", f"numpy {numpy.__version__}",
             f"scipy {scipy.__version__}"]
    try:
        import torch
        parts.append(f"torch {torch.__version__}")
    except ImportError:
        parts.append("torch not installed (fig5_right skipped)")
    return ", ".join(parts)


def strip_raw(data):
    """The JSON without RAW_KEYS at any depth."""
    if isinstance(data, dict):
        return {k: strip_raw(v) for k, v in data.items() if k not in RAW_KEYS}
    if isinstance(data, list):
        return [strip_raw(v) for v in data]
    return data


def previous(dest: Path) -> tuple[dict, str]:
    """The claims and the publication date of what `dest` holds now ({} and "" if nothing)."""
    try:
        claims = json.loads((dest / "claims.json").read_text())
        dated = [line for line in (dest / "REPORT.md").read_text().splitlines()
                 if line.startswith("Published ")]
    except (OSError, ValueError):
        return {}, ""
    return claims, (dated[0].split(" on ")[0][len("Published "):] if dated else "")


def changes(old: dict, new: dict, old_date: str) -> list[str]:
    """Markdown lines: every claim whose verdict differs from the previous publication (matched
    by experiment and claim text; an old run may have judged one claim once per preprocessing,
    hence a list of old verdicts), with the new verdict's reason.  [] if there was none."""
    if not old:
        return []
    rows = []
    for name, claims in new.items():
        before: dict = {}
        for c in old.get(name, []):
            before.setdefault(c["claim"], []).append(c["verdict"])
        for c in claims:
            was = before.get(c["claim"])
            if was is None:
                rows.append(f"| {name} | {_md(c['claim'][:90])} | (new claim) | "
                            f"**{c['verdict']}** | {_md(c.get('reason', ''))} |")
            elif set(was) != {c["verdict"]}:
                rows.append(f"| {name} | {_md(c['claim'][:90])} | {' / '.join(was)} | "
                            f"**{c['verdict']}** | {_md(c.get('reason', ''))} |")
    head = [f"## Verdicts changed since the previous publication ({old_date or 'undated'})", ""]
    if not rows:
        return head + ["None: every claim's verdict is the same.", ""]
    return head + ["| experiment | claim | before | now | why (now) |", "|---|---|---|---|---|"] \
        + rows + [""]


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def publish(src: Path, dest: Path) -> int:
    """Copy the report of `src` into `dest` (replaced); returns the bytes written."""
    from gpulinear.report import EXPERIMENTS
    report = src / "REPORT.md"
    if not report.exists():
        raise SystemExit(f"{report} is missing: run `gpulinear reproduce --full --out {src}` first")
    old_claims, old_date = previous(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    claims = {}
    if (src / "robustness.png").exists():
        shutil.copy2(src / "robustness.png", dest / "robustness.png")
    for name in EXPERIMENTS:
        folder = src / name
        if not folder.is_dir():
            continue
        for png in sorted(folder.glob("*.png")):
            (dest / name).mkdir(exist_ok=True)
            shutil.copy2(png, dest / name / png.name)
        doc = folder / f"{name}.json"
        if doc.exists():
            data = strip_raw(json.loads(doc.read_text()))
            (dest / name).mkdir(exist_ok=True)
            (dest / name / doc.name).write_text(json.dumps(data, indent=1))
            claims[name] = data.get("claims", [])
    (dest / "claims.json").write_text(json.dumps(claims, indent=1))
    header = ["<!-- published by experiments/publish.py; regenerate with the command below -->",
              f"Regenerate: `{COMMAND.format(src=src, dest=dest)}`", "",
              f"Published {time.strftime('%Y-%m-%d %H:%M')} on {machine()}; {versions()}.", ""]
    body = report.read_text()
    diff = changes(old_claims, claims, old_date)
    if diff:    # after the report's first table, before its robustness section
        marker = "## Robustness"
        body = (body.replace(marker, "\n".join(diff) + "\n" + marker, 1) if marker in body
                else body + "\n" + "\n".join(diff))
    (dest / "REPORT.md").write_text("\n".join(header) + body)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    if size > MAX_BYTES:
        raise SystemExit(f"{dest} holds {size / 1e6:.1f} MB, over the {MAX_BYTES / 1e6:.0f} MB "
                         "limit: look for raw curves in the JSON files")
    return size


def readme_block(dest: Path, claims: dict, root: Path) -> str:
    """The README's headline: one row per claim (experiment, claim, verdict) and Fig 3."""
    rel = dest.resolve().relative_to(root.resolve()) if dest.resolve().is_relative_to(
        root.resolve()) else dest
    rows = [README_START, "", f"Paper-length verdicts ([full report]({rel}/REPORT.md)):", "",
            "| experiment | claim (paper) | verdict | robustness: variants holding | why |",
            "|---|---|---|---|---|"]
    for name, items in claims.items():
        for c in items:
            text = str(c["claim"]).replace("|", "\\|")
            v = c.get("variants") or {}
            held = f"{sum(x == 'holds' for x in v.values())} of {len(v)}" if v else "-"
            why = str(c.get("reason", "")).replace("|", "\\|")
            rows.append(f"| {name} | {text[:110] + ('...' if len(text) > 110 else '')} | "
                        f"**{c['verdict']}** | {held} | {why[:160]} |")
    if (dest / "robustness.png").exists():
        rows += ["", f"![Verdict per claim and variant]({rel}/robustness.png)"]
    if (dest / "fig3" / "fig3.png").exists():
        rows += ["", f"![Fig 3 at paper length]({rel}/fig3/fig3.png)"]
    return "\n".join(rows + ["", README_END])


def update_readme(readme: Path, block: str) -> bool:
    """Replace the README's marked block (between README_START and README_END); False if there
    is no README or it has no markers."""
    if not readme.is_file():          # an installed copy of this script: no README beside it
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + block + tail)
    return True


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit(__doc__)
    src, dest = Path(argv[0]), Path(argv[1])
    size = publish(src, dest)
    print(f"published {src} -> {dest} ({size / 1e3:.0f} kB)")
    root = Path(__file__).resolve().parents[1]
    claims = json.loads((dest / "claims.json").read_text())
    if update_readme(root / "README.md", readme_block(dest, claims, root)):
        print(f"updated the claims table in {root / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
