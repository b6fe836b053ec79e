"""Copy a trained checkpoint into the package as its default weights, with a name and provenance.

    python scripts/ship_default.py runs/base/refiner.pt --name base-mobilenet_v2-davis16

The checkpoint is re-read strictly (it must load into the model it describes) and written as float16.
"""

import argparse
import hashlib
import sys
from pathlib import Path

from reusevos.config import ModelConfig
from reusevos.errors import ReusevosError
from reusevos.model.backbone import Backbone
from reusevos.model.network import DEFAULT_CHECKPOINT, VOSNetwork, read_checkpoint, save_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="refiner.pt or dynamic.pt written by training")
    parser.add_argument("--name", required=True, help="a name for the weights, stored in their metadata")
    parser.add_argument("--out", default=str(DEFAULT_CHECKPOINT), help="where to write (default: the package default)")
    args = parser.parse_args()
    try:
        payload = read_checkpoint(args.checkpoint)
        config = ModelConfig.from_dict(payload["config"])
        network = VOSNetwork(config, Backbone(config.backbone))  # the backbone's weights are not stored
        network.load_trained_state({k: v.float() for k, v in payload["state_dict"].items()}, args.checkpoint)
    except ReusevosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source_sha = hashlib.sha256(Path(args.checkpoint).read_bytes()).hexdigest()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, network, half=True,
                    meta={**payload.get("meta", {}), "name": args.name, "source_sha256": source_sha})
    print(f"{args.out}: {Path(args.out).stat().st_size} bytes, sha256 "
          f"{hashlib.sha256(Path(args.out).read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
