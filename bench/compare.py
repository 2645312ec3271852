# Side-by-side tables of Anneal's rows and the Hugging Face anchor's:
#   1. fixed-shape training steps (Anneal.Bench train --json, anchor/hf_anchor.py), matched on model,
#      mode, micro-batch and checkpointing;
#   2. realistic lengths (Anneal.Bench lengths --json, anchor/hf_anchor_lengths.py): Anneal's "order"
#      rows against the anchor's dataset order, "bucketed", "budget" and "packed" against its length-grouped rows.
# Usage: python3 compare.py [RESULTS/anneal.jsonl RESULTS/hf_anchor.json] [--lengths RESULTS/anneal_lengths.jsonl RESULTS/hf_anchor_lengths.json]
# A file that does not exist leaves its side of the table empty.
import json, os, sys

def rows_jsonl(path):
    return [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []

def rows_json(path):
    return json.load(open(path)) if os.path.exists(path) else []

def f(x, fmt="{:,.0f}"):
    return "-" if x is None else fmt.format(x)

args = sys.argv[1:]
lengths = None
if "--lengths" in args:
    i = args.index("--lengths")
    lengths, args = args[i + 1:i + 3], args[:i] + args[i + 3:]
if lengths:
    ours_l = rows_jsonl(lengths[0])
    anchor_l = {(r["model"], r["batching"]): r for r in rows_json(lengths[1])}
    print("## Realistic lengths (512 examples, lognormal median 400; non-padding tokens/s over the timed epoch)\n")
    print("| model | Anneal batching | micro | rows / steps | pad | Anneal tok/s | HF batching | HF pad | HF tok/s | ratio | Anneal GiB (device used) | HF GiB (device used / allocated peak) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in ours_l:
        hf_batching = "dataset order" if r["batching"] == "order" else "length-grouped"
        a = anchor_l.get((r["model"], hf_batching), {})
        ratio = r["trained_tokens_per_s"] / a["trained_tokens_per_s"] if r.get("trained_tokens_per_s") and a.get("trained_tokens_per_s") else None
        err = f" ({r['error'][:60]})" if r.get("error") else ""
        print(f"| {r['model']} | {r['batching']} | {r['micro']} | {r['rows']} / {r['steps']} | {f(r.get('pad_fraction'), '{:.1%}')} | "
              f"{f(r.get('trained_tokens_per_s'))}{err} | {hf_batching} | {f(a.get('pad_fraction'), '{:.1%}')} | {f(a.get('trained_tokens_per_s'))} | "
              f"{f(ratio, '{:.2f}')} | {f(r.get('device_used_gib'), '{:.1f}')} | {f(a.get('device_used_gib'), '{:.1f}')} / {f(a.get('peak_gib'), '{:.1f}')} |")
    print()
if len(args) < 2:
    sys.exit(0)
print("## Fixed shapes (random tokens, micro × 2048 a step)\n")

def key(r):
    return (r["model"], r["mode"], r.get("micro", 4), bool(r.get("ckpt", False)))

ours = rows_jsonl(args[0])
anchor = {key(r): r for r in rows_json(args[1])}
for r in anchor.values():  # older anchor files have tflops but no mfu
    if r.get("mfu") is None and r.get("tflops") is not None:
        r["mfu"] = r["tflops"] / 989
print("| model | mode | micro | ckpt | optimizer | loss | Anneal tok/s | HF tok/s | ratio | Anneal MFU | HF MFU | Anneal GiB (device used) | HF GiB (device used / allocated peak) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in ours:
    a = anchor.get(key(r), {})
    ratio = (r["tokens_per_s"] / a["tokens_per_s"]) if r.get("tokens_per_s") and a.get("tokens_per_s") else None
    err = f" ({r['error']})" if r.get("error") else ""
    print(f"| {r['model']} | {r['mode']} | {r['micro']} | {r['ckpt']} | {r['optimizer']} | {r['loss']} | {f(r.get('tokens_per_s'))}{err} | "
          f"{f(a.get('tokens_per_s'))}{' (' + a['error'][:60] + ')' if a.get('error') else ''} | {f(ratio, '{:.2f}')} | "
          f"{f(r.get('mfu'), '{:.1%}')} | {f(a.get('mfu'), '{:.1%}')} | {f(r.get('device_used_gib'), '{:.1f}')} | "
          f"{f(a.get('device_used_gib'), '{:.1f}')} / {f(a.get('peak_gib'), '{:.1f}')} |")
