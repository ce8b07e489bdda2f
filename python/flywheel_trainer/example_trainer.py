"""An example PyTorch trainer: trains the pipeline's scorer from verified labels, exports it to
ONNX, and announces it; a running pipeline swaps it in (``onnx-score`` following ``--model``).

    python -m flywheel_trainer.example_trainer --prefix flywheel --features '{"dims":64,"rewardNames":["correct"]}' \\
        --checkpoint scorer.ckpt --out-dir models --announce-every 200

Each accepted Decision waits (in the checkpointed state) for its Label (keyed by rollout id, so
usually in another partition); a joined pair is one example: x = ``featurize(rollout)``, y = the
label's value. Every batch trains the examples it completed, then commits (checkpoint first).
Every ``--announce-every`` examples the model is exported as ``<out-dir>/<model>-<version>.onnx``,
the checkpoint records the update, and it is announced — after the commit, so a crash between
the two announces it again on restart (re-announcing a version is harmless).
Runs on ``cuda`` when present, else the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

from .checkpoint import arrays_of, state_dict_from
from .client import TrainerClient
from .features import FeatureConfig, feature_size, featurize
from .records import DEFAULT_BROKERS, DEFAULT_REGISTRY_URL
from .scorer import LogisticScorer, device, export_onnx, train_step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prefix", required=True, help="the deployment's topics.prefix")
    ap.add_argument("--features", default="{}", help="the pipeline config's features block, JSON")
    ap.add_argument("--model", default="scorer", help="the model name the onnx-score operator follows")
    ap.add_argument("--group", default=None, help="consumer group (default <prefix>.torch-scorer)")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--announce-every", type=int, default=200, help="examples between announcements")
    ap.add_argument("--version-prefix", default="torch")
    ap.add_argument("--epochs", type=int, default=20, help="optimizer steps per batch of examples")
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--max-records", type=int, default=256)
    ap.add_argument("--stop-after-announcements", type=int, default=0, help="exit after this many (0: run on)")
    ap.add_argument("--brokers", default=os.environ.get("KAFKA_BROKERS", DEFAULT_BROKERS))
    ap.add_argument("--registry", default=os.environ.get("SCHEMA_REGISTRY_URL", DEFAULT_REGISTRY_URL))
    args = ap.parse_args(argv)

    cfg = FeatureConfig.from_json(json.loads(args.features))
    dev = device()
    client = TrainerClient.open(
        prefix=args.prefix,
        group_id=args.group or f"{args.prefix}.torch-scorer",
        trainer="torch-scorer",
        checkpoint_path=args.checkpoint,
        brokers=args.brokers,
        registry_url=args.registry,
        labels=True,
    )
    model = LogisticScorer(feature_size(cfg)).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    state = {"pending": {}, "labels": {}, "examples": 0, "since_announce": 0, "announced": [], "last_update": None}
    if client.restored is not None:
        state = client.restored.state
        model.load_state_dict(state_dict_from(client.restored.arrays, state["shapes"]))
        if state["last_update"] is not None:
            client.announce(**state["last_update"])  # the crash may have come before it went out
    print(f"[torch-scorer] on {dev}, {state['examples']} examples so far", file=sys.stderr)
    try:
        for batch in client.batches(max_records=args.max_records, max_wait_ms=500):
            xs, ys = [], []
            pending, labels = state["pending"], state["labels"]
            for r in batch.records:
                if r.kind == "decision":
                    rid = r.value["rollout"]["id"]
                    if rid in labels:
                        xs.append(featurize(r.value["rollout"], cfg))
                        ys.append(labels.pop(rid))
                    else:
                        pending[rid] = r.value["rollout"]
                else:
                    rid = r.value["rollout_id"]
                    if rid in pending:
                        xs.append(featurize(pending.pop(rid), cfg))
                        ys.append(r.value["value"])
                    else:
                        labels[rid] = r.value["value"]
            loss = None
            if xs:
                loss = train_step(model, optimizer, torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.float32), args.epochs)
                state["examples"] += len(xs)
                state["since_announce"] += len(xs)
            update = None
            if state["since_announce"] >= args.announce_every:
                version = f"{args.version_prefix}-{len(state['announced']) + 1}"
                path = os.path.join(args.out_dir, f"{args.model}-{version}.onnx")
                checksum = export_onnx(model, path, version)
                model.to(dev)
                update = {"model": args.model, "version": version, "artifact": os.path.abspath(path), "checksum": checksum, "metrics": {"examples": state["examples"], "train_loss": loss or 0.0}}
                state["announced"].append(version)
                state["since_announce"] = 0
                state["last_update"] = update
            arrays, shapes = arrays_of(model.state_dict())
            state["shapes"] = shapes
            client.commit(batch, lambda cp: cp.write(state, arrays))
            if update is not None:
                client.announce(**update)
                print(f"[torch-scorer] announced {args.model} {update['version']} ({state['examples']} examples, loss {loss})", file=sys.stderr)
                if args.stop_after_announcements and len(state["announced"]) >= args.stop_after_announcements:
                    return 0
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
