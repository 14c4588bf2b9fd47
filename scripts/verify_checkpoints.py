"""Check that checkpoint files hold what was saved, e.g. a copy on another machine or a download.

    python scripts/verify_checkpoints.py runs/eca_resnet50/*.pth.tar released/*.pth.tar

One line per file: ``OK`` and what it was checked against, or ``BAD`` and what is wrong. Any
checkpoint this project reads: main.py's and detect.py's (the CRC-32 of every zip record and
the SHA-256 of the tensor data recorded when saved), released legacy-format files and
``.safetensors`` files (timm's, Hugging Face's; neither format records a checksum: only their
structure and values are checked). Exit status 0 when every file is OK, 1 when any is not.
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.checkpoint import CheckpointError, verify_checkpoint_file  # noqa: E402
from utils.console import EXIT_FAILED, OneLineErrorParser  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint files")
    args = parser.parse_args(argv)
    bad = 0
    for path in args.checkpoints:
        try:
            print(f"OK   {path}: {verify_checkpoint_file(path)}", flush=True)
        except CheckpointError as error:
            print(f"BAD  {error}", flush=True)
            bad += 1
    return EXIT_FAILED if bad else 0


if __name__ == "__main__":
    sys.exit(main())
