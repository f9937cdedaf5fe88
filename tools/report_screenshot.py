"""Build two tiny packages, profile them into an HTML report, and screenshot it with headless Chromium.

``make report-screenshot`` runs this. The packages are a random 2-layer BERT classifier built in code
(tests/toy_models.py), exported fp32 and int8-dynamic; nothing is downloaded. Chromium is Debian's
(``apt-get install chromium``); the screenshot is what a person sees when they open the report.

    python tools/report_screenshot.py [--out DIR] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_packages(out: Path) -> list[Path]:
    """fp32 and int8-dynamic packages of the tests' tiny BERT classifier (built once, reused)."""
    sys.path.insert(0, str(ROOT))
    from exporters import export
    from tests.toy_models import tiny_bert_classifier

    source = out / "tiny-bert-src"
    if not (source / "config.json").is_file():
        tiny_bert_classifier(source)
    packages = []
    for recipe in ("fp32", "int8-dynamic"):
        pkg = out / f"tiny-bert-{recipe}"
        if not (pkg / "edgekit.json").is_file():
            export(
                source,
                output=pkg,
                task="text-classification",
                recipe=recipe,
                progress=False,
                force=True,
                validation_samples=32,
            )
        packages.append(pkg)
    return packages


def screenshot(html: Path, png: Path, *, width: int = 1400, height: int = 3000) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: install it with `apt-get install chromium` (Debian)")
    with tempfile.TemporaryDirectory(prefix="edgekit-chromium-") as profile_dir:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile_dir}",
                f"--screenshot={png}",
                f"--window-size={width},{height}",
                html.resolve().as_uri(),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "report-screenshot")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--skip-profile", action="store_true", help="screenshot the existing profile.html")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    html = args.out / "profile.html"
    if not args.skip_profile:
        packages = build_packages(args.out)
        from edgekit.cli import main as edgekit

        code = edgekit(
            [
                "profile",
                *map(str, packages),
                "--device",
                "host",
                "--device",
                "raspberry-pi-5",
                "--device",
                "pixel-8",
                "--runs",
                str(args.runs),
                "--html",
                str(html),
                "-q",
            ]
        )
        if code not in (0, 3):
            return code
    png = args.out / "profile.png"
    screenshot(html, png, height=args.height)
    print(f"report: {html}\nscreenshot: {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
