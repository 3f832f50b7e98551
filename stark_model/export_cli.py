"""stark-export: a STARK model's ONNX graphs (encode_template, encode_search, decode) as files.

Its own module so that export.py (which the backends import) never imports the factory (which
imports the backends).
"""
from __future__ import annotations

import argparse

from .checkpoint import CheckpointError
from .export import export_onnx
from .factory import load_model


def main(argv: list[str] | None = None) -> int:
    """stark-export: write encode_template.onnx, encode_search.onnx and decode.onnx."""
    parser = argparse.ArgumentParser(description='Export a STARK model to ONNX (encode and decode graphs).')
    parser.add_argument('--checkpoint', default=None, help='STARK checkpoint (.pth.tar)')
    parser.add_argument('--variant', default=None, help='variant name or YAML (needed with --untrained)')
    parser.add_argument('--untrained', action='store_true', help='random weights (for speed tests only)')
    parser.add_argument('--output', required=True, help='folder for the .onnx files')
    args = parser.parse_args(argv)
    try:
        model = load_model(args.checkpoint, args.variant, allow_untrained=args.untrained)
    except (ValueError, OSError, CheckpointError) as error:
        parser.error(str(error))
    for path in export_onnx(model.network, model.variant.tracker).write(args.output):
        print(path)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
