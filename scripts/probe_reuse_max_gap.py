"""Probe (issue 18, not a library option): G-TTVOS's paper path at tau 0.7 with a cap on consecutive reused frames.
A reused object is computed once more than GAP frames have passed since its last computed frame (0: no cap, the
paper's path). Patches ``Session.decide`` for this process only; prints one JSON line (J&F, per-sequence J&F and
reuse rate in %).

    python scripts/probe_reuse_max_gap.py GAP DAVIS_ROOT SPLIT SEQ1,SEQ2,... REUSE_WINDOW
    python scripts/probe_reuse_max_gap.py 2 ~/data/DAVIS train bear,car-turn,flamingo,lucia,paragliding,stroller 2
"""
import json, sys
import numpy as np
import reusevos
from reusevos.config import SessionConfig
from reusevos.session import Route, Session
from reusevos.evaluation.davis_eval import DavisScores, score_sequence
from reusevos.io.davis import DavisDataset, load_sequence

gap, root, split, seqs, reuse_window = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split(","), int(sys.argv[5])
original = Session.decide
def decide(self, tracks, f8, timed):
    original(self, tracks, f8, timed)
    for t in tracks:
        if t.route is Route.REUSED and gap and self.frame_index - t.obj.last_computed > gap:
            t.route = Route.COMPUTED
Session.decide = decide
model = reusevos.load_model("ttvos", device="cpu")
ds = DavisDataset(root, split=split, sequences=seqs)
objs, rows = [], []
for name in ds.sequences:
    data = load_sequence(ds, name)
    s = Session(model, SessionConfig("reuse", 0.7, reuse_window=reuse_window))
    labels = np.stack([s.step(f, data.start_masks.get(t)).labels for t, f in enumerate(data.frames)])
    sc = score_sequence(data.ground_truth, labels, name, data.frame_ids); objs += sc
    rows.append((name, round(100 * DavisScores(sc).global_scores()["J&F-Mean"], 1), round(100 * np.mean(list(s.reuse_rates.values())), 1)))
g = DavisScores(objs).global_scores()
print(json.dumps({"gap": gap, "reuse_window": reuse_window, "J&F": round(100 * g["J&F-Mean"], 1), "rows": rows}))
