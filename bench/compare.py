# Side-by-side table of Anneal's training-step rows (Anneal.Bench train --json) and the Hugging Face
# anchor's rows (anchor/hf_anchor.py), matched on model, mode, micro-batch and checkpointing.
# Usage: python3 compare.py RESULTS/anneal.jsonl RESULTS/hf_anchor.json
import json, sys

def key(r):
    return (r["model"], r["mode"], r.get("micro", 4), bool(r.get("ckpt", False)))

ours = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
anchor = {key(r): r for r in json.load(open(sys.argv[2]))}
for r in anchor.values():  # older anchor files have tflops but no mfu
    if r.get("mfu") is None and r.get("tflops") is not None:
        r["mfu"] = r["tflops"] / 989
print("| model | mode | micro | ckpt | optimizer | loss | Anneal tok/s | HF tok/s | ratio | Anneal MFU | HF MFU | Anneal GiB (device used) | HF GiB (device used / allocated peak) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in ours:
    a = anchor.get(key(r), {})
    def f(x, fmt="{:,.0f}"):
        return "-" if x is None else fmt.format(x)
    ratio = (r["tokens_per_s"] / a["tokens_per_s"]) if r.get("tokens_per_s") and a.get("tokens_per_s") else None
    err = f" ({r['error']})" if r.get("error") else ""
    print(f"| {r['model']} | {r['mode']} | {r['micro']} | {r['ckpt']} | {r['optimizer']} | {r['loss']} | {f(r.get('tokens_per_s'))}{err} | "
          f"{f(a.get('tokens_per_s'))}{' (' + a['error'][:60] + ')' if a.get('error') else ''} | {f(ratio, '{:.2f}')} | "
          f"{f(r.get('mfu'), '{:.1%}')} | {f(a.get('mfu'), '{:.1%}')} | {f(r.get('device_used_gib'), '{:.1f}')} | "
          f"{f(a.get('device_used_gib'), '{:.1f}')} / {f(a.get('peak_gib'), '{:.1f}')} |")
