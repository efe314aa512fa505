"""The last step of ``make demo``: ``runs/demo/report.md``, the pipeline's results on one page.

    python -m benchmarks.demo_report --demo runs/demo [--identity-regions eyes,nose]

Tables from the JSON the demo's commands wrote (parser F1, recognizer accuracy, IJB-C TAR@FAR,
``.bin`` accuracy, accuracy with each region group erased, FS-CAM region scores) and a link to
every figure. Steps whose outputs are missing are listed as missing, not skipped silently.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.studies import markdown_table
from parsing.core.cli import cli_main
from parsing.core.errors import InputError

FIGURES = (
    ("synth_sheet.png", "synthetic faces beside their 25-class masks"),
    ("fserasing_sheet.png", "FSErasing: the same regions erased under every fill mode"),
    ("parser_sheet.png", "the trained parser's masks on the recognition set"),
    ("ijbc_eval/ijbc_roc.png", "ROC on the IJB-C-layout protocol"),
    ("occlusion/occlusion.png", "verification with one region group erased in the probe"),
    ("photos_regions.png", "landmark-based FSE-25 regions on the packaged photos"),
    ("fserasing_photos.png", "FSErasing on the aligned photos"),
    ("astronaut_lips.png", "region recolouring (lips)"),
)


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def report(demo: Path, identity_regions: str | None) -> str:
    missing: list[str] = []
    lines = ["# `make demo` report\n",
             "Everything below was produced by `make demo` on synthetic faces "
             + (f"whose identity lives only in the regions **{identity_regions}** "
                "(`parsing.synth --identity-regions`), so the explanations can be checked "
                "against the truth" if identity_regions else "")
             + ". Figures are linked relative to this file.\n"]

    parser = _load(demo / "parser" / "eval.json")
    lines.append("## Face parser (held-out identities)\n")
    if parser:
        per_class = sorted((c for c in parser["per_class"] if c.get("f1") is not None),
                           key=lambda c: c["f1"])
        lines.append(markdown_table(["mean F1 (foreground)", "mIoU", "pixel accuracy",
                                     "weakest classes (F1)"],
                                    [[_pct(parser["mean_f1"]), _pct(parser["miou"]),
                                      _pct(parser["pixel_accuracy"]),
                                      ", ".join(f"{c['name']} {_pct(c['f1'])}"
                                                for c in per_class[:3])]]))
    else:
        missing.append("parser/eval.json")

    lines.append("## Recognizer\n")
    rows = []
    metrics = demo / "recognition" / "metrics.jsonl"
    if metrics.is_file():
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line]
        val = [r for r in records if any(k.endswith("/accuracy") for k in r)]
        if val:
            key = next(k for k in val[-1] if k.endswith("/accuracy"))
            rows.append([f"pair accuracy, {key.split('/')[0]} (held-out identities)",
                         _pct(val[-1][key])])
    else:
        missing.append("recognition/metrics.jsonl")
    ijbc = _load(demo / "ijbc_eval" / "ijbc_verification.json")
    if ijbc:
        tar = ijbc["verification"]["tar_at_far"]
        rows += [[f"IJB-C-layout TAR @ FAR {far}", _pct(tar[far])]
                 for far in ("1e-03", "1e-02", "1e-01") if far in tar]
        rows.append(["IJB-C-layout ROC AUC", _pct(ijbc["verification"]["auc"])])
    else:
        missing.append("ijbc_eval/ijbc_verification.json")
    verification = _load(demo / "verification" / "verification.json")
    if verification:
        rows += [[f"`.bin` {name} 10-fold accuracy", f"{_pct(r['accuracy'])} ± {_pct(r['std'])}"]
                 for name, r in verification["sets"].items()]
    else:
        missing.append("verification/verification.json")
    lines.append(markdown_table(["measure", "%"], rows))

    occlusion = _load(demo / "occlusion" / "occlusion.json")
    lines.append("## Occlusion: one region group erased in the probe\n")
    if occlusion:
        lines.append(markdown_table(
            ["erased", "area %", "accuracy %", "TAR@FAR 1e-2 %"],
            [[g, f"{100 * e['erased_area']:.1f}", _pct(e["accuracy"]),
              _pct(e["tar_at_far"].get("1e-02"))] for g, e in occlusion["table"].items()]))
        lines.append("![occlusion](occlusion/occlusion.png)\n")
    else:
        missing.append("occlusion/occlusion.json")

    lines.append("## Explanations: FS-CAM beside Grad-CAM, RISE and Group-CAM\n")
    explained = sorted((demo / "explain").glob("*.json")) if (demo / "explain").is_dir() else []
    if explained:
        record = json.loads(explained[0].read_text())
        lines.append(f"Target: {record['target']}."
                     + (f" Outlined in the figure: the true identity regions "
                        f"({identity_regions})." if identity_regions else "") + "\n")
        fscam = record["methods"].get("fscam", {}).get("region_score", {})
        top = sorted(fscam.items(), key=lambda kv: -kv[1])[:6]
        if top:
            lines.append(markdown_table(["FS-CAM top regions", "region score"],
                                        [[name, f"{score:.3f}"] for name, score in top]))
        image = explained[0].with_suffix(".png")
        lines.append(f"![explanations]({image.relative_to(demo).as_posix()})\n")
    else:
        missing.append("explain/*.json")

    lines.append("## Figures\n")
    for name, what in FIGURES:
        if (demo / name).is_file():
            lines.append(f"- [{what}]({name})")
        else:
            missing.append(name)
    if missing:
        lines.append("\n## Missing outputs\n\n" + "\n".join(f"- `{m}`" for m in missing))
    return "\n".join(lines) + "\n"


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default="runs/demo", help="the demo's output folder")
    p.add_argument("--identity-regions", help="the regions that carry identity in the demo set")
    args = p.parse_args(argv)
    demo = Path(args.demo)
    if not demo.is_dir():
        raise InputError(f"{demo}: no such folder (run make demo first)")
    out = demo / "report.md"
    out.write_text(report(demo, args.identity_regions))
    print(json.dumps({"report": str(out)}))


if __name__ == "__main__":
    sys.exit(main())
