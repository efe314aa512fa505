"""``python -m recognition.attributes.train``: train a facial attribute / expression model.

    python -m recognition.attributes.train --data celeba:/data/celeba --network iresnet34 \\
        --attention gc --aug fserasing --masks /data/celeba_masks.rec --out runs/attr
    python -m recognition.attributes.train --data synth:data/synth --network mbf --aug fserasing \\
        --out runs/attr_synth        # masks: the synthetic set's own label maps

``--data`` is KIND:PATH (celeba, rafdb, affectnet, synth; :mod:`recognition.attributes.data`).
Everything else behaves as ``python -m recognition.train``: ``--config FILE.yaml`` (its field
names, flags override it), a progress bar, TensorBoard in ``OUT/tb``, atomic checkpoints,
``--resume OUT`` continuing exactly, ``torchrun --nproc_per_node=N -m
recognition.attributes.train ...`` for DDP, ``--device cuda``, ``--fp16`` / ``--bf16``.
The run folder's ``model.pt`` and ``model.json`` are what ``recognition.attributes.evaluate``
and ``cam.attributes`` load.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from parsing.core.cli import ArgumentParser, cli_main, non_negative_float, positive_int
from recognition.attributes.data import list_attribute_datasets
from recognition.attributes.models import list_attentions
from recognition.attributes.training import AttributeConfig, AttributeTrainer
from recognition.train import add_training_arguments, run


def build_arg_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m recognition.attributes.train",
                        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=__doc__.split("\n\n", 1)[1])
    add_training_arguments(ap, f"KIND:PATH, KIND one of {', '.join(list_attribute_datasets())}")
    a = ap.add_argument
    a("--attention", choices=[*list_attentions(), "none"],
      help="contextual channel attention after the backbone's last feature map (default none)")
    a("--attention-kwargs", help="JSON options of the attention block, e.g. '{\"reduction\": 8}'")
    a("--backbone-checkpoint", help="initial backbone weights (e.g. a recognizer's model.pt)")
    a("--expression-weight", type=non_negative_float,
      help="weight of the expression loss beside the attribute loss (default 1)")
    a("--image-size", type=positive_int,
      help="faces are centre-cropped to a square and resized to this (default 112)")
    a("--split", choices=("train", "val", "test", "all"), help="split to train on (train)")
    a("--val-split", choices=("train", "val", "test", "all", "none"),
      help="split validated on every --val-every steps and at the end (default val; none: "
           "no validation)")
    return ap


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    run(build_arg_parser().parse_args(argv), AttributeConfig, AttributeTrainer)


if __name__ == "__main__":
    raise SystemExit(main())
