"""Final accuracy, salient fraction (recipe definition) and mean CoT length of a model on arith test."""
import json, sys, statistics as st
from atmanrl import load_model
from atmanrl.data import get_task
from atmanrl.generate import SamplingConfig, generate_task, accuracy
from atmanrl.explain import row_to_trace
from atmanrl.saliency import compute_saliency
from atmanrl.rewards import salient_fraction
model_path, n = sys.argv[1], int(sys.argv[2])
m, t = load_model(model_path)
task = get_task("arith", level=1)
ex = task.load(split="test", limit=n, seed=0)
rows = generate_task(m, t, task, ex, SamplingConfig(seed=0, batch_size=16))
cot = [len(t(r["reasoning"], add_special_tokens=False)["input_ids"]) for r in rows]
ok = [r for r in rows if r["correct"] and len(t(r["reasoning"], add_special_tokens=False)["input_ids"]) >= 5]
sals = compute_saliency(m, t, [row_to_trace(r, t, task) for r in ok], "learned") if ok else []
sf = [salient_fraction(s, tau=0.1) for s in sals]
print(json.dumps({"model": model_path, "n": n, "accuracy": accuracy(rows), "mean_cot_tokens": st.mean(cot),
                  "salient_fraction_tau0.1": st.mean(sf) if sf else None, "scored": len(sals),
                  "salient_fraction_tau0.5": st.mean(salient_fraction(s, tau=0.5) for s in sals) if sals else None}))
