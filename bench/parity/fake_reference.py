# Plumbing check without a GPU or PyTorch: writes a reference file in hf_parity.py's format for a
# model folder that has no Hugging Face reference (e.g. the tiny model the trainer generates), with
# token ids drawn below its vocabulary size (config.json). Reference VALUES come from an Anneal parity output
# (--values FILE, e.g. a float32 CPU run): comparing Anneal against itself only checks that the
# files, the loader and the compare step fit together. It says nothing about agreement with
# transformers; that needs hf_parity.py on the GPU machine.
#   python3 fake_reference.py --model-dir DIR --out ref.json [--values anneal_parity_float32.json]
import argparse, json, random
p = argparse.ArgumentParser()
p.add_argument("--model-dir", required=True, help="folder whose config.json gives vocab_size")
p.add_argument("--out", required=True)
p.add_argument("--values")
a = p.parse_args()
a.vocab = json.load(open(a.model_dir + "/config.json"))["vocab_size"]
r = random.Random(1)
steps, distinct = 20, 4
ref = dict(engine="fake (Anneal values, plumbing check only)", transformers=None, torch=None, device="none", model_dir=None,
           logit_ids=[[r.randrange(a.vocab) for _ in range(64)] for _ in range(2)],
           logit_columns=list(range(0, a.vocab, 7)),
           train=dict(lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0, max_grad_norm=None, steps=steps,
                      batches=[[[r.randrange(a.vocab) for _ in range(128)] for _ in range(2)] for _ in range(distinct)],
                      schedule=[s % distinct for s in range(steps)]))
if a.values:
    v = json.load(open(a.values))
    ref["logits"] = dict(fp32=v["logits"], bf16=v["logits"])
    ref["train"]["losses"] = dict(fp32=v["losses"], bf16=v["losses"])
json.dump(ref, open(a.out, "w"))
print(f"wrote {a.out}{' with values from ' + a.values if a.values else ' (inputs only)'}")
