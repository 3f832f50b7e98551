"""Check a dataset on disk before training on it: every sequence's annotations parse and every
frame file exists. Prints progress and a summary; exit status 1 with the first error otherwise.

    python -m stark_training.datasets.check lasot /data/lasot --option split=train
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence as Seq

from . import READERS, DatasetError, open_dataset


def parse_options(pairs: Seq[str]) -> dict[str, object]:
    """key=value reader options; integers, 'none' and comma lists of integers are converted."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep or not key:
            raise SystemExit(f'--option {pair!r}: expected key=value')
        if value.lower() == 'none':
            options[key] = None
        elif value.lstrip('-').isdigit():
            options[key] = int(value)
        elif ',' in value and all(v.strip().isdigit() for v in value.split(',')):
            options[key] = tuple(int(v) for v in value.split(','))
        else:
            options[key] = value
    return options


def check(name: str, root: str, options: dict[str, object], out=sys.stdout) -> int:
    """Open and verify the dataset; 0 when all is well, 1 (after printing the error) otherwise."""
    try:
        dataset = open_dataset(name, root, **options)
        frames = visible = 0
        start = time.monotonic()
        for index in range(len(dataset)):
            sequence = dataset[index]
            missing = next((f for f in sequence.frames if not f.is_file()), None)
            if missing is not None:
                raise DatasetError(f'{missing}: missing (frame of sequence {sequence.name})')
            frames += len(sequence)
            visible += int(sequence.visible.sum())
            if index % 50 == 0 or index == len(dataset) - 1:
                print(f'\r{index + 1}/{len(dataset)} sequences, {time.monotonic() - start:.0f} s',
                      end='', file=out, flush=True)
        print(f'\n{name} at {root}: {len(dataset)} sequences, {frames} frames, '
              f'{visible} with a visible target', file=out)
        return 0
    except (DatasetError, ValueError) as error:
        print(f'\nerror: {error}', file=out)
        return 1


def main(argv: Seq[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('name', choices=sorted(READERS))
    parser.add_argument('root')
    parser.add_argument('--option', action='append', default=[], metavar='KEY=VALUE',
                        help='reader option, e.g. split=train, resolution=480p, chunks=0,1')
    args = parser.parse_args(argv)
    return check(args.name, args.root, parse_options(args.option))


if __name__ == '__main__':
    sys.exit(main())
